// Embedded migrations (sqlx::migrate!) must trigger a rebuild when a file is added.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
