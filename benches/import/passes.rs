//! Where a reconcile's time goes: its three passes, told apart by what its connections
//! run (`watch` hands over their statements from `pg_stat_activity` every 50 ms). The
//! import logs nothing per pass, and this needs no change to it.

/// In the order a reconcile goes through them.
const NAMES: [&str; 5] = [
    "startup",
    "ids (COPY)",
    "index+count",
    "deactivate absent",
    "apply",
];

pub(crate) struct Passes {
    /// When each pass was first seen (seconds from the spawn); startup at 0.
    seen: [Option<f64>; 5],
    end: f64,
}

impl Passes {
    pub(crate) fn new() -> Self {
        Self {
            seen: [Some(0.0), None, None, None, None],
            end: 0.0,
        }
    }

    /// Which pass a statement of the reconcile belongs to; `None` for one several passes
    /// run (the watermarks, the audit trail, the migrations). The records' upserts are the
    /// only writes of `users` rows by INSERT: they mark the apply pass.
    fn pass_of(query: &str) -> Option<usize> {
        if query.starts_with("COPY export_ids_") {
            Some(1)
        } else if query.starts_with("CREATE INDEX ON export_ids_")
            || query.starts_with("ANALYZE export_ids_")
            || query.contains("count(DISTINCT s.auth_user_id)")
        {
            Some(2)
        } else if query.contains("NOT EXISTS (SELECT 1 FROM export_ids_") {
            Some(3)
        } else if query.starts_with("INSERT INTO users") {
            Some(4)
        } else {
            None
        }
    }

    /// The statements the import's connections were running `at` seconds from the spawn.
    pub(crate) fn see(&mut self, queries: &[String], at: f64) {
        for q in queries {
            let q = q.trim_start();
            let Some(pass) = Self::pass_of(q) else {
                continue;
            };
            if pass > self.latest() && self.seen[pass].is_none() {
                self.seen[pass] = Some(at);
            }
        }
    }

    fn latest(&self) -> usize {
        self.seen.iter().rposition(Option::is_some).unwrap_or(0)
    }

    pub(crate) fn end(&mut self, secs: f64) {
        self.end = secs;
    }

    /// "startup 0.3 s, ids (COPY) 2.1 s, ...": each pass seen, to the next one seen.
    pub(crate) fn summary(&self) -> String {
        let marks: Vec<(usize, f64)> = (0..NAMES.len())
            .filter_map(|i| self.seen[i].map(|t| (i, t)))
            .collect();
        let mut out = Vec::new();
        for (k, &(i, t)) in marks.iter().enumerate() {
            let next = marks.get(k + 1).map_or(self.end, |m| m.1);
            out.push(format!("{} {:.1} s", NAMES[i], next - t));
        }
        out.join(", ")
    }
}
