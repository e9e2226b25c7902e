//! Secrets given to the command line without putting them on it: `-` reads the value from
//! standard input, `@<path>` from a file, so that it appears in neither `ps` nor the shell's
//! history. Anything else is the value itself (kept for scripts, and discouraged in the docs).

use std::io::Read;

use anyhow::{Context, bail};

/// Reads each argument's value where it says; at most one may read standard input.
#[derive(Debug, Default)]
pub(crate) struct SecretInput {
    stdin_taken: Option<&'static str>,
}

impl SecretInput {
    pub(crate) fn read(&mut self, flag: &'static str, value: String) -> anyhow::Result<String> {
        let text = if value == "-" {
            if let Some(other) = self.stdin_taken.replace(flag) {
                bail!("{flag} and {other} cannot both read standard input");
            }
            let mut text = String::new();
            let _ = std::io::stdin()
                .read_to_string(&mut text)
                .with_context(|| format!("{flag}: standard input"))?;
            text
        } else if let Some(path) = value.strip_prefix('@') {
            std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {path}"))?
        } else {
            return Ok(value);
        };
        // A file or a pipe usually ends with a new line that is not part of the secret.
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_itself_and_a_file_is_read_without_its_final_new_line() {
        let mut input = SecretInput::default();
        assert_eq!(input.read("--signing-secret", "plain".into()).expect("value"), "plain");
        let path = std::env::temp_dir().join(format!("sb-secret-{}", std::process::id()));
        std::fs::write(&path, "from-a-file\n").expect("write");
        let arg = format!("@{}", path.display());
        assert_eq!(input.read("--signing-secret", arg).expect("file"), "from-a-file");
        let _ = std::fs::remove_file(&path);
        assert!(input.read("--api-client-secret", "@/no/such/file".into()).is_err());
    }
}
