//! The operator's commands: `status`, `dlq`, `send`, `import`, `brake`, `explain`. Each returns what it found or did as
//! data, printed by `main` as a table for people or JSON for scripts.

pub mod brake;
pub mod dlq;
pub mod explain;
pub mod import;
pub mod send;
pub mod status;

/// Left-aligned columns, two spaces apart: the readable form of every report.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let t = super::table(
            &["queue", "ready"],
            &[
                vec!["lms".into(), "3".into()],
                vec!["lms.dlq".into(), "12".into()],
            ],
        );
        assert_eq!(t, "queue    ready\nlms      3\nlms.dlq  12\n");
    }
}
