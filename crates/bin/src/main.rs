fn main() {
    println!("emporium: not wired yet");
}
