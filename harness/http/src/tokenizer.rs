//! Tokenizers: a Hugging Face `tokenizer.json` (through the `tokenizers`
//! crate), or fuselab's built-in word tokenizer for its random-weight models.
//!
//! The built-in tokenizer maps token id `i` to the word `t<i>` and splits
//! text on whitespace, so `"t5 t17 t3"` is exactly the ids `[5, 17, 3]` and a
//! prompt of N ids is N words. [`TextTokenizer::builtin_json`] writes it as a
//! standard `tokenizer.json` (a `WordLevel` model) that any client with the
//! `tokenizers` library can load; `fuselab serve --write-tokenizer FILE`
//! saves it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::HttpError;

/// A tokenizer with the few operations benchmarking needs.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    source: String,
    builtin: bool,
    safe: OnceLock<Vec<u32>>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Most tokens scanned for single-token pieces that re-encode to themselves.
const SAFE_SCAN: u32 = 60_000;

impl TextTokenizer {
    /// The built-in word tokenizer over `vocab` ids (`t0` … `t<vocab−1>`, plus
    /// `<unk>` at id `vocab`).
    pub fn builtin(vocab: u32) -> Self {
        let json = Self::builtin_json(vocab);
        let inner: tokenizers::Tokenizer = json
            .parse()
            .expect("the built-in tokenizer.json is valid by construction");
        Self {
            inner,
            source: format!("builtin:words:{vocab}"),
            builtin: true,
            safe: OnceLock::new(),
        }
    }

    /// The built-in tokenizer as `tokenizer.json` text.
    pub fn builtin_json(vocab: u32) -> String {
        let mut words = String::with_capacity(vocab as usize * 12);
        for i in 0..vocab {
            words.push_str(&format!("\"t{i}\":{i},"));
        }
        format!(
            concat!(
                r#"{{"version":"1.0","truncation":null,"padding":null,"#,
                r#""added_tokens":[{{"id":{v},"content":"<unk>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}],"#,
                r#""normalizer":null,"pre_tokenizer":{{"type":"WhitespaceSplit"}},"post_processor":null,"decoder":null,"#,
                r#""model":{{"type":"WordLevel","vocab":{{{words}"<unk>":{v}}},"unk_token":"<unk>"}}}}"#
            ),
            v = vocab,
            words = words
        )
    }

    /// Loads a Hugging Face `tokenizer.json`.
    ///
    /// # Errors
    /// [`HttpError::Tokenizer`] naming the file when it cannot be read or parsed.
    pub fn from_file(path: &Path) -> Result<Self, HttpError> {
        let err = |message: String| HttpError::Tokenizer {
            path: PathBuf::from(path),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let inner: tokenizers::Tokenizer = text.parse().map_err(|e| {
            err(format!(
                "not a Hugging Face tokenizer.json ({e}); give the tokenizer.json of the served model"
            ))
        })?;
        Ok(Self {
            inner,
            source: format!("file:{}", path.display()),
            builtin: false,
            safe: OnceLock::new(),
        })
    }

    /// Where the tokenizer came from (`builtin:words:N` or `file:PATH`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is the built-in word tokenizer.
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// Number of ids, special tokens included.
    pub fn vocab_size(&self) -> u32 {
        u32::try_from(self.inner.get_vocab_size(true)).unwrap_or(u32::MAX)
    }

    /// The ids of `text`, without special tokens added.
    ///
    /// # Errors
    /// [`HttpError::Encode`] when the tokenizer fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, HttpError> {
        self.inner
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| HttpError::Encode(e.to_string()))
    }

    /// Number of tokens in `text` (0 when it cannot be encoded).
    pub fn count(&self, text: &str) -> usize {
        if self.builtin {
            return text.split_whitespace().count();
        }
        self.encode(text).map_or(0, |ids| ids.len())
    }

    /// The text of `ids`.
    ///
    /// # Errors
    /// [`HttpError::Encode`] when an id is out of range.
    pub fn decode(&self, ids: &[u32]) -> Result<String, HttpError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| HttpError::Encode(e.to_string()))
    }

    /// The text one generated token contributes to a stream (built-in
    /// tokenizer: ` t<id>`).
    pub fn piece(&self, id: u32) -> String {
        if self.builtin {
            return format!(" t{id}");
        }
        self.decode(&[id]).unwrap_or_default()
    }

    /// Ids whose text is plain ASCII letters or digits (after an optional
    /// leading space) and re-encodes to exactly that id: the alphabet prompt
    /// text is built from.
    fn safe_ids(&self) -> &[u32] {
        self.safe.get_or_init(|| {
            let n = self.vocab_size().min(SAFE_SCAN);
            let safe: Vec<u32> = (0..n)
                .filter(|&id| {
                    let Ok(text) = self.decode(&[id]) else {
                        return false;
                    };
                    let body = text.strip_prefix(' ').unwrap_or(&text);
                    !body.is_empty()
                        && body.chars().all(|c| c.is_ascii_alphanumeric())
                        && self.encode(&text).is_ok_and(|ids| ids == [id])
                })
                .collect();
            if safe.is_empty() {
                (0..n).collect()
            } else {
                safe
            }
        })
    }

    /// Prompt text that encodes to exactly `ids.len()` tokens: the ids
    /// themselves for the built-in tokenizer; otherwise each id is mapped
    /// onto a token that round-trips on its own (so equal ids give equal text
    /// and shared prefixes stay shared), and the text is re-encoded and
    /// trimmed or extended until its count is right. Returns the text and
    /// whether the count was reached.
    pub fn text_with_tokens(&self, ids: &[u32]) -> (String, bool) {
        let n = ids.len();
        let vocab = self.vocab_size().max(1);
        if self.builtin {
            let mut s = String::with_capacity(n * 7);
            for (k, id) in ids.iter().enumerate() {
                if k > 0 {
                    s.push(' ');
                }
                s.push('t');
                s.push_str(&(id % vocab.saturating_sub(1).max(1)).to_string());
            }
            return (s, true);
        }
        let safe = self.safe_ids();
        let pick = |id: u32| safe[id as usize % safe.len()];
        let mut tokens: Vec<u32> = ids.iter().map(|&id| pick(id)).collect();
        let mut text = self.decode(&tokens).unwrap_or_default();
        for round in 0..16 {
            let got = self.encode(&text).unwrap_or_default();
            match got.len().cmp(&n) {
                std::cmp::Ordering::Equal => return (text, true),
                std::cmp::Ordering::Greater => tokens = got[..n].to_vec(),
                std::cmp::Ordering::Less => {
                    tokens = got;
                    let missing = n - tokens.len();
                    tokens.extend((0..missing).map(|k| pick((round * 7919 + k) as u32)));
                }
            }
            text = self.decode(&tokens).unwrap_or_default();
        }
        let ok = self.encode(&text).is_ok_and(|t| t.len() == n);
        (text, ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_round_trips_words_and_counts_exactly() {
        let t = TextTokenizer::builtin(1000);
        assert_eq!(t.encode("t5 t17  t3").unwrap(), [5, 17, 3]);
        assert_eq!(t.decode(&[5, 17]).unwrap(), "t5 t17");
        assert_eq!(t.count(" t1 t2"), 2);
        assert_eq!(t.piece(9), " t9");
        let ids: Vec<u32> = (0..300).map(|i| (i * 37) % 1000).collect();
        let (text, ok) = t.text_with_tokens(&ids);
        assert!(ok);
        assert_eq!(t.encode(&text).unwrap(), ids);
        assert_eq!(t.vocab_size(), 1001);
    }

    #[test]
    fn builtin_json_loads_as_a_file_tokenizer() {
        let dir = std::env::temp_dir().join(format!("fuselab-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, TextTokenizer::builtin_json(64)).unwrap();
        let t = TextTokenizer::from_file(&path).unwrap();
        assert!(!t.is_builtin());
        assert_eq!(t.encode("t1 t63").unwrap(), [1, 63]);
        for n in [1usize, 7, 100] {
            let ids: Vec<u32> = (0..n as u32).collect();
            let (text, ok) = t.text_with_tokens(&ids);
            assert!(ok, "{n}");
            assert_eq!(t.count(&text), n);
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_file_that_is_not_a_tokenizer_is_named() {
        let dir = std::env::temp_dir().join(format!("fuselab-badtok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, "{\"x\": 1}").unwrap();
        let err = TextTokenizer::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
