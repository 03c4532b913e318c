//! A store of named baselines: run folders copied under a directory
//! (`$FUSELAB_BASELINES`, else `.fuselab/baselines`), for CI use
//! (`fuselab gate --save-baseline main` on pushes, `--baseline main` on pull
//! requests).

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The baselines directory: `$FUSELAB_BASELINES` when set, else
/// `.fuselab/baselines` under the current directory.
pub fn baselines_dir() -> PathBuf {
    match std::env::var_os("FUSELAB_BASELINES") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(".fuselab").join("baselines"),
    }
}

/// Checks a baseline name: 1–100 characters from `[A-Za-z0-9._-]`, not
/// starting with a dot.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "--save-baseline",
            format!("{name:?} is not a valid baseline name"),
            "use letters, digits, '.', '_' and '-' (not starting with '.'), e.g. main",
        ))
    }
}

/// Copies run folders into `dir/NAME`, replacing an existing baseline of that
/// name: one run is stored as `NAME/` itself, several as `NAME/run-0`, … .
/// Returns the baseline's folder.
pub fn save_baseline(runs: &[PathBuf], name: &str, dir: &Path) -> Result<PathBuf> {
    validate_name(name)?;
    if runs.is_empty() {
        return Err(Error::invalid(
            "--save-baseline",
            "no run to save",
            "pass --candidate RUN with the run to save",
        ));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let dest = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    if runs.len() == 1 {
        copy_dir(&runs[0], &tmp)?;
    } else {
        for (i, r) in runs.iter().enumerate() {
            copy_dir(r, &tmp.join(format!("run-{i}")))?;
        }
    }
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
    }
    fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    Ok(dest)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(|e| Error::io(&path, e))?;
        let target = to.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&path, &target)?;
        } else if ty.is_file() {
            fs::copy(&path, &target).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Resolves `--baseline ARG` to run folders: `ARG` itself when it is a
/// folder, else the baseline named `ARG` in `dir`. A baseline folder holding
/// `summary.json` is one run; otherwise each subfolder holding one is a run.
pub fn resolve_baseline(arg: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let as_path = PathBuf::from(arg);
    let folder = if as_path.is_dir() {
        as_path
    } else if validate_name(arg).is_ok() && dir.join(arg).is_dir() {
        dir.join(arg)
    } else {
        return Err(Error::NoBaseline {
            name: arg.to_string(),
            path: if validate_name(arg).is_ok() {
                dir.join(arg)
            } else {
                as_path
            },
            hint: format!(
                "give a run folder, or a name saved with --save-baseline in {} (set FUSELAB_BASELINES to change it)",
                dir.display()
            ),
        });
    };
    run_folders(&folder)
}

/// The run folders in `folder`: itself when it holds `summary.json`, the
/// runs listed in its `repeat.json` for a repeat folder (`bench --repeat N`),
/// else its subfolders that hold a `summary.json` (sorted).
pub fn run_folders(folder: &Path) -> Result<Vec<PathBuf>> {
    if folder.join(fuselab_store::SUMMARY_FILE).is_file() || !folder.is_dir() {
        return Ok(vec![folder.to_path_buf()]);
    }
    if folder.join(fuselab_store::REPEAT_FILE).is_file() {
        return Ok(fuselab_store::repeat_run_folders(folder)?);
    }
    let mut runs = Vec::new();
    for entry in fs::read_dir(folder).map_err(|e| Error::io(folder, e))? {
        let p = entry.map_err(|e| Error::io(folder, e))?.path();
        if p.join("summary.json").is_file() {
            runs.push(p);
        }
    }
    runs.sort();
    if runs.is_empty() {
        // Let the run store report the missing summary.json for the folder itself.
        runs.push(folder.to_path_buf());
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_resolve_one_and_several_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("r1");
        fs::create_dir_all(run.join("sub")).unwrap();
        fs::write(run.join("summary.json"), "{}").unwrap();
        fs::write(run.join("sub/x"), "x").unwrap();
        let store = tmp.path().join("store");
        let saved = save_baseline(std::slice::from_ref(&run), "main", &store).unwrap();
        assert!(saved.join("sub/x").is_file());
        assert_eq!(
            resolve_baseline("main", &store).unwrap(),
            vec![saved.clone()]
        );
        // Saving again replaces, and several runs become run-0, run-1.
        save_baseline(&[run.clone(), run.clone()], "main", &store).unwrap();
        let runs = resolve_baseline("main", &store).unwrap();
        assert_eq!(runs.len(), 2);
        assert!(runs[1].ends_with("run-1"));
        // A folder path resolves to itself.
        assert_eq!(
            resolve_baseline(run.to_str().unwrap(), &store).unwrap(),
            vec![run]
        );
        let err = resolve_baseline("nope", &store).unwrap_err().to_string();
        assert!(
            err.contains("nope") && err.contains("--save-baseline"),
            "{err}"
        );
        assert!(validate_name("../x").is_err());
    }
}
