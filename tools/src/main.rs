fn main() {
    println!("gregor: being written");
}
