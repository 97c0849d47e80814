//! The exit codes a script can trust, the same for every command (README, Operating it).

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Done.
    Done = 0,
    /// Failed: a service unreachable or refusing, or any other error at run time.
    Failed = 1,
    /// A usage or configuration mistake: nothing was attempted. Clap's own usage errors
    /// exit with 2 as well.
    Usage = 2,
    /// Done, but some records were rejected (`import`) or came straight back to the
    /// dead-letter queue (`dlq replay`): read the report.
    SomeRejected = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_documented_numbers() {
        let codes = [Exit::Done, Exit::Failed, Exit::Usage, Exit::SomeRejected];
        let numbers: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
        assert_eq!(numbers, [0, 1, 2, 3]);
        assert_eq!(ExitCode::from(Exit::Done), ExitCode::SUCCESS);
        assert_eq!(ExitCode::from(Exit::Failed), ExitCode::FAILURE);
    }
}
