//! Relinks `sandbox` when scripts/hot-functions.txt changes: the shipped
//! build's linker wrapper (scripts/cc-hot-first) lays out its code from
//! that list, which cargo would not otherwise know is an input.

fn main() {
    println!("cargo:rerun-if-changed=../scripts/hot-functions.txt");
}
