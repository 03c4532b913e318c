//! Every flag can also come from a TOML file: `fuselab <command> --config FILE`.
//!
//! The file's keys are the long flag names without `--` (kebab-case), at the
//! top level; values have the flag's type. Flags given on the command line win
//! over the file; a key the command does not know is an error naming the file,
//! the line and the key. Relative paths in the file are taken relative to the
//! current directory, exactly as on the command line.
//!
//! ```toml
//! # workload.toml, for `fuselab workload --config workload.toml --seed 8`
//! preset = "fastgen-2600"
//! n = 10000
//! seed = 7          # overridden by --seed 8
//! rate = 4.0
//! ```
//!
//! # The pattern (reuse it for `bench`, `sweep`, `tune`, …)
//!
//! 1. One args struct per subcommand deriving `clap::Args`, `serde::Serialize`,
//!    `serde::Deserialize` and `Default`, with
//!    `#[serde(deny_unknown_fields, rename_all = "kebab-case")]`.
//! 2. Every field is an `Option<T>`, a `Vec<T>` or a `bool` switch, and has **no
//!    clap default**: a default would look like a value given on the command
//!    line and silently override the file. Apply defaults after merging
//!    (`args.n.unwrap_or(1000)`), and say what they are in the flag's doc.
//! 3. The `--config` field itself is `#[arg(long, value_name = "FILE")]` and
//!    `#[serde(skip)]`.
//! 4. Enums used as values derive `clap::ValueEnum` and serde with
//!    `rename_all = "kebab-case"`, so the file spells them as the flag does.
//! 5. First thing in `run`: `let args = config::merge(args.clone(), args.config.as_deref())?;`
//!    and use only the merged value from then on. Clap's `conflicts_with` cannot
//!    see values that came from the file, so check conflicting flags after
//!    merging.
//!
//! ```ignore
//! #[derive(Debug, Clone, Default, clap::Args, serde::Serialize, serde::Deserialize)]
//! #[serde(deny_unknown_fields, rename_all = "kebab-case")]
//! pub struct BenchArgs {
//!     /// Read flags from this TOML file (keys are flag names); flags given here win.
//!     #[arg(long, value_name = "FILE")]
//!     #[serde(skip)]
//!     pub config: Option<PathBuf>,
//!     /// Requests per second [default: 1].
//!     #[arg(long)]
//!     pub rate: Option<f64>,
//!     /// Keep going after errors.
//!     #[arg(long)]
//!     #[serde(default)]
//!     pub keep_going: bool,
//! }
//! ```
//!
//! Merging is generic: both sides are turned into JSON values and every field
//! the command line set (not `null`, not `false`, not an empty list) replaces
//! the file's; nested tables merge key by key. So a group of flags shared by
//! several commands (`#[command(flatten)]` in clap, e.g. the workload flags)
//! can be a nested serde struct: in the file it is a table such as
//! `[workload]`, and its flags still override it one by one. A `bool` switch
//! can only be turned on from the command line, never off.

use std::path::Path;

use fuselab_core::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Reads a TOML config file into `T`.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Parse`] with the file,
/// the line and the message (which names an unknown key, or quotes the line of
/// a value of the wrong type).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path)
}

/// Parses TOML text as `T`; `path` only names the file in errors.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, Error> {
    toml::from_str(text).map_err(|e| {
        let (line, context) = match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let line = text[..start].matches('\n').count() + 1;
                let src = text.lines().nth(line - 1).unwrap_or("").trim();
                (line, src.to_string())
            }
            None => (1, String::new()),
        };
        let mut message = e.message().trim().to_string();
        if !context.is_empty() && !message.contains("unknown field") {
            message = format!("{message} (in `{context}`)");
        }
        if message.contains("unknown field") {
            message = format!("{message}; keys are the command's long flags without `--`");
        }
        Error::Parse {
            path: path.to_path_buf(),
            line,
            message,
        }
    })
}

/// Merges command-line arguments over the TOML file at `file` (if any):
/// values set on the command line win. See the module docs for the pattern.
///
/// # Errors
/// Those of [`load`].
pub fn merge<T: Serialize + DeserializeOwned>(cli: T, file: Option<&Path>) -> Result<T, Error> {
    let Some(path) = file else {
        return Ok(cli);
    };
    let from_file: T = load(path)?;
    let invalid = |e: serde_json::Error| {
        Error::invalid(
            "--config",
            format!("cannot merge {} with the command line: {e}", path.display()),
            "check the value types in the file",
        )
    };
    let mut base = serde_json::to_value(from_file).map_err(invalid)?;
    let over = serde_json::to_value(cli).map_err(invalid)?;
    overlay(&mut base, over);
    serde_json::from_value(base).map_err(invalid)
}

/// Whether a serialised command-line value means "not given".
fn unset(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn overlay(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if let Some(slot) = b.get_mut(&k)
                    && slot.is_object()
                    && v.is_object()
                {
                    overlay(slot, v);
                } else if unset(&v) {
                    b.entry(k).or_insert(v);
                } else {
                    b.insert(k, v);
                }
            }
        }
        (b, o) => {
            if !unset(&o) {
                *b = o;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Args {
        #[serde(skip)]
        config: Option<std::path::PathBuf>,
        preset: Option<String>,
        n: Option<u64>,
        rate: Option<f64>,
        #[serde(default)]
        list: bool,
        #[serde(default)]
        tags: Vec<String>,
        prefix_len: Option<u32>,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn command_line_wins_and_file_fills_in() {
        let f = file(
            "preset = \"long-8k\"\nn = 5\nrate = 2.5\nlist = true\ntags = [\"a\"]\nprefix-len = 7\n",
        );
        let cli = Args {
            n: Some(9),
            ..Args::default()
        };
        let got = merge(cli, Some(f.path())).unwrap();
        assert_eq!(
            got,
            Args {
                config: None,
                preset: Some("long-8k".into()),
                n: Some(9),
                rate: Some(2.5),
                list: true,
                tags: vec!["a".into()],
                prefix_len: Some(7),
            }
        );
        let cli = Args {
            tags: vec!["b".into()],
            ..Args::default()
        };
        assert_eq!(merge(cli, Some(f.path())).unwrap().tags, ["b"]);
    }

    #[test]
    fn no_file_is_the_command_line() {
        let cli = Args {
            rate: Some(1.0),
            ..Args::default()
        };
        assert_eq!(merge(cli, None).unwrap().rate, Some(1.0));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let f = file("n = 5\nbogus-key = 1\n");
        let err = merge(Args::default(), Some(f.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{}:2: unknown field `bogus-key`",
                f.path().display()
            )),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_quotes_the_line() {
        let f = file("\nrate = \"fast\"\n");
        let err = merge(Args::default(), Some(f.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2: ") && err.contains("in `rate = \"fast\"`"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_names_it() {
        let err = merge(Args::default(), Some(Path::new("/nonexistent/x.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/x.toml"), "{err}");
    }
}
