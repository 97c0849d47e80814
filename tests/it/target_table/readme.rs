//! The README's `[target]` examples, verbatim, pass the start check against the tables the
//! frameworks' own migrations create (tests/it/support/frameworks.rs, spring_identity.rs).

use super::*;
use crate::support::*;

/// Each fenced TOML block of the README that holds a whole `[target]` section.
fn readme_targets() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.starts_with("[target]\n") && block.contains("table = "))
        .map(str::to_string)
        .collect()
}

/// The framework whose table a README block maps, told by a column only it has.
fn framework_of(block: &str) -> &'static Framework {
    [
        ("public.auth_user", &DJANGO),
        ("{first_name} {last_name}", &LARAVEL),
        ("encrypted_password", &DEVISE),
        ("flag = \"enabled\"", &SPRING),
        ("AspNetUsers", &IDENTITY),
    ]
    .into_iter()
    .find(|(mark, _)| block.contains(mark))
    .map(|(_, f)| f)
    .unwrap_or_else(|| panic!("no framework for README block:\n{block}"))
}

/// Every framework example in the README starts (`import /dev/null --dry-run` runs the
/// start check and exits 0) on its framework's table with the key `--print-target-sql`
/// gives: none names a column the table lacks, a length it cannot hold, or a tombstone
/// longer than an email column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_readme_framework_example_passes_the_start_check() {
    let blocks = readme_targets();
    assert_eq!(blocks.len(), 5, "Django, Laravel, Devise, Spring, Identity");
    for block in blocks {
        let framework = framework_of(&block);
        // The tests keep Laravel's table in a schema of its own.
        let block = block.replace("\"public.users\"", &format!("\"{}\"", framework.table));
        let env = Env::new().await;
        let db = &backend(&env).await;
        run_sql(db, framework.ddl).await;
        run_sql(db, &target_table_ddl(&mapping_of(&block))).await;
        let run = with_config(&env, &block, &["import", "/dev/null", "--dry-run"]).await;
        assert_eq!(run.code, 0, "{block}\n{}", run.text());
    }
}
