//! The layers `lib.rs` states, checked: every module imports (`crate::x`) only modules its
//! doc lists before it. Unit tests are left out: they may reach across to test a whole.

use std::path::{Path, PathBuf};

/// The modules in the order of `lib.rs`'s layer list: its backticked names that are
/// modules of this crate.
fn order(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let list = lib
        .lines()
        .map(|l| l.trim_start_matches("//!").trim())
        .skip_while(|l| !l.starts_with("Layers"))
        .take_while(|l| !l.is_empty());
    let mut order = Vec::new();
    for line in list {
        for name in line.split('`').skip(1).step_by(2) {
            let module = src.join(name).is_dir() || src.join(format!("{name}.rs")).is_file();
            if module && !order.iter().any(|m| m == name) {
                order.push(name.to_string());
            }
        }
    }
    order
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of a file outside its unit tests: a test file is all tests, and an inline
/// `#[cfg(test)] mod tests { ... }` ends the code above it.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let name = path.file_name().unwrap().to_string_lossy();
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return Vec::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        if line.trim() == "#[cfg(test)]" && next.starts_with("mod ") && next.ends_with('{') {
            break;
        }
        if !line.trim_start().starts_with("//") {
            out.push((i + 1, line.to_string()));
        }
    }
    out
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = order(&src);
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    for path in all {
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let top = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if ["lib", "main", "cli"].contains(&top.as_str()) {
            continue;
        }
        let Some(own) = rank(&top) else {
            wrong.push(format!(
                "{}: module `{top}` is in no layer",
                relative.display()
            ));
            continue;
        };
        for (n, line) in code_lines(&path) {
            for used in line.split("crate::").skip(1) {
                let used: String = used
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used != top && rank(&used).is_none_or(|r| r > own) {
                    wrong.push(format!(
                        "{}:{n}: `{top}` imports `{used}`",
                        relative.display()
                    ));
                }
            }
        }
    }
    assert!(
        order.len() > 10,
        "the layer list in lib.rs was not found: {order:?}"
    );
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}
