//! The layers `lib.rs` states, checked: every module imports (`crate::x`) only modules its
//! doc lists before it. Unit tests are left out: they may reach across to test a whole.

use std::path::{Path, PathBuf};

/// The modules of `lib.rs`'s layer list (its backticked names that are modules of this
/// crate) with their rank: the order they are listed in, but a module named after
/// "beside" shares the rank of the one before it, so neither may import the other.
fn ranks(src: &Path) -> Vec<(String, usize)> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let list = lib
        .lines()
        .map(|l| l.trim_start_matches("//!").trim())
        .skip_while(|l| !l.starts_with("Layers"))
        .take_while(|l| !l.is_empty());
    let mut ranks: Vec<(String, usize)> = Vec::new();
    let mut beside = false;
    for line in list {
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                beside |= part.contains("beside");
                continue;
            }
            let module = src.join(part).is_dir() || src.join(format!("{part}.rs")).is_file();
            if !module || ranks.iter().any(|(m, _)| m == part) {
                continue;
            }
            let rank = match ranks.last() {
                Some((_, last)) if beside => *last,
                _ => ranks.len(),
            };
            ranks.push((part.to_string(), rank));
            beside = false;
        }
    }
    ranks
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
fn code(path: &Path) -> Vec<String> {
    let name = path.file_name().unwrap().to_string_lossy();
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return Vec::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        let inline_tests = next.starts_with("mod ") || next.starts_with("pub(crate) mod ");
        if line.trim() == "#[cfg(test)]" && inline_tests && next.ends_with('{') {
            break;
        }
        out.push(line.to_string());
    }
    out
}

/// `code` without its comment lines, each with its line number.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let lines = code(path).into_iter().enumerate();
    lines
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
        .collect()
}

/// Each function of `lines` (as rustfmt lays them out) longer than `limit` lines, from its
/// `fn` line to the `}` at the same indentation, as `name (lines)`.
fn long_functions(lines: &[String], limit: usize) -> Vec<String> {
    let mut long = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let words: Vec<&str> = code.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let qualifiers = [
            "pub",
            "pub(crate)",
            "pub(super)",
            "async",
            "const",
            "unsafe",
        ];
        if !words[..at].iter().all(|w| qualifiers.contains(w)) || code.ends_with('}') {
            continue;
        }
        let opened = lines[start..]
            .iter()
            .position(|l| l.trim_end().ends_with('{') || l.trim_end().ends_with(';'));
        if opened.is_none_or(|o| lines[start + o].trim_end().ends_with(';')) {
            continue;
        }
        let close = format!("{}}}", &line[..line.len() - code.len()]);
        let end = lines[start..].iter().position(|l| *l == close);
        let length = end.map_or(lines.len() - start, |e| e + 1);
        if length > limit {
            let name = words[at + 1].split(['(', '<']).next().unwrap_or_default();
            long.push(format!("{name} ({length} lines)"));
        }
    }
    long
}

/// The limits a newcomer can rely on: no file over 300 lines and no function over 80,
/// unit tests aside.
#[test]
fn files_and_functions_stay_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut over = Vec::new();
    for path in all {
        let relative = path.strip_prefix(&src).unwrap().display().to_string();
        let lines = code(&path);
        if lines.len() > 300 {
            over.push(format!("{relative}: {} lines", lines.len()));
        }
        for f in long_functions(&lines, 80) {
            over.push(format!("{relative}: fn {f}"));
        }
    }
    assert!(over.is_empty(), "over the limits:\n{}", over.join("\n"));
}

#[test]
fn a_long_function_is_measured_to_its_closing_brace() {
    let body = |n: usize| (0..n).map(|i| format!("        let x{i} = {i};"));
    let mut lines = vec![
        "impl A {".to_string(),
        "    pub(crate) async fn big(".into(),
    ];
    lines.extend(["        a: u8,".into(), "    ) -> u8 {".into()]);
    lines.extend(body(80));
    lines.extend([
        "    }".into(),
        "    fn small() {}".into(),
        "    fn decl();".into(),
    ]);
    lines.extend(["    fn fits() {".into()]);
    lines.extend(body(78));
    lines.extend(["    }".into(), "}".into()]);
    assert_eq!(long_functions(&lines, 80), ["big (84 lines)"]);
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = ranks(&src);
    let rank = |m: &str| order.iter().find(|(o, _)| o == m).map(|(_, r)| *r);
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
                if used != top && rank(&used).is_none_or(|r| r >= own) {
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
