//! Text ↔ token ids: raw bytes for vocab-256 byte models, the folder's `tokenizer.json` (Hugging
//! Face `tokenizers`) otherwise.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::ModelConfig;

pub enum Tokenizer {
    /// id = byte value; the continuation is written as raw bytes.
    Bytes,
    Hf(Box<tokenizers::Tokenizer>),
}

impl Tokenizer {
    /// The tokenizer of a model folder: `tokenizer.json` when present, bytes when the config says
    /// `"tokenizer": "bytes"` (or a vocab-256 model has no tokenizer file).
    pub fn open(dir: &Path, cfg: &ModelConfig) -> Result<Tokenizer> {
        let file = dir.join("tokenizer.json");
        let text = if Self::is_bytes(cfg, file.exists()) {
            None
        } else {
            Some(std::fs::read_to_string(&file).map_err(|source| Error::Io {
                path: file.display().to_string(),
                source,
            })?)
        };
        Self::from_memory(cfg, text.as_deref(), &file.display().to_string())
    }

    /// Whether a model's ids are bytes: its config says so, or a vocab-256 model has no tokenizer.
    pub fn is_bytes(cfg: &ModelConfig, has_tokenizer_json: bool) -> bool {
        cfg.tokenizer.as_deref() == Some("bytes") || (!has_tokenizer_json && cfg.vocab_size == 256)
    }

    /// The tokenizer from the text of a `tokenizer.json` already in memory (`None` where the model
    /// has none); `name` says where it came from in errors.
    pub fn from_memory(cfg: &ModelConfig, json: Option<&str>, name: &str) -> Result<Tokenizer> {
        if Self::is_bytes(cfg, json.is_some()) {
            if cfg.vocab_size < 256 {
                return Err(Error::Checkpoint {
                    file: "config.json".into(),
                    msg: format!(
                        "a byte-level model needs vocab_size ≥ 256, got {}",
                        cfg.vocab_size
                    ),
                });
            }
            return Ok(Tokenizer::Bytes);
        }
        let name = name.to_string();
        let Some(json) = json else {
            return Err(Error::Checkpoint {
                file: name,
                msg: format!(
                    "missing: the model has vocab_size {} and config.json does not say \
                     \"tokenizer\": \"bytes\"; add the model's tokenizer.json",
                    cfg.vocab_size
                ),
            });
        };
        let tok: tokenizers::Tokenizer = json.parse().map_err(|e| Error::Checkpoint {
            file: name.clone(),
            msg: format!("not a valid tokenizer.json: {e}"),
        })?;
        let n = tok.get_vocab_size(true);
        if n > cfg.vocab_size {
            return Err(Error::Checkpoint {
                file: name,
                msg: format!(
                    "the tokenizer has {n} tokens but the model's vocab_size is {}",
                    cfg.vocab_size
                ),
            });
        }
        Ok(Tokenizer::Hf(Box::new(tok)))
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::Hf(t) => Ok(t
                .encode(text, false)
                .map_err(|e| Error::invalid("tokenizer", format!("cannot encode the prompt: {e}")))?
                .get_ids()
                .to_vec()),
        }
    }

    /// Bytes of a whole sequence of ids (for output that is not streamed).
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        self.decode_after(&[], ids)
    }

    /// Bytes of `ids` as a continuation of `prompt`: what `decode(prompt ++ ids)` adds to
    /// `decode(prompt)`. A continuation decoded on its own would lose the space of its first token
    /// to decoders that strip the text's first space (LLaMA's `Strip`).
    pub fn decode_after(&self, prompt: &[u32], ids: &[u32]) -> Result<Vec<u8>> {
        let mut s = self.stream_after(prompt)?;
        let mut out = Vec::new();
        for &id in ids {
            out.extend(s.step(id)?);
        }
        out.extend(s.finish()?);
        Ok(out)
    }

    /// An incremental decoder: each id yields the bytes it completes (multi-token characters are
    /// held back until whole, so streamed output is never split inside a UTF-8 sequence).
    pub fn stream(&self) -> TokenStream<'_> {
        match self {
            Tokenizer::Bytes => TokenStream::Bytes,
            Tokenizer::Hf(t) => TokenStream::Hf(HfStream::new(t, Vec::new(), String::new())),
        }
    }

    /// [`Tokenizer::stream`] for the continuation of `prompt`, which it does not print: the
    /// prompt is the context its first tokens are decoded in.
    pub fn stream_after(&self, prompt: &[u32]) -> Result<TokenStream<'_>> {
        match self {
            Tokenizer::Bytes => Ok(TokenStream::Bytes),
            Tokenizer::Hf(t) => {
                let prefix = hf_decode(t, prompt)?;
                Ok(TokenStream::Hf(HfStream::new(t, prompt.to_vec(), prefix)))
            }
        }
    }
}

fn hf_decode(t: &tokenizers::Tokenizer, ids: &[u32]) -> Result<String> {
    t.decode(ids, true).map_err(|e| {
        Error::invalid(
            "tokenizer",
            format!(
                "cannot decode tokens {:?}: {e}",
                &ids[ids.len().saturating_sub(4)..]
            ),
        )
    })
}

pub enum TokenStream<'a> {
    Bytes,
    Hf(HfStream<'a>),
}

/// Incremental decoding through the tokenizer's own decoder chain, so that its space handling
/// (GPT-2's byte map, LLaMA's `▁` and stripped first space) applies: the tokens not printed yet
/// are decoded after the tokens that printed the last piece (the context), and what that adds to
/// the context's text is printed once it does not end inside a character. This is the scheme of
/// the `tokenizers` crate's `DecodeStream`, which gives up with an error where a later token
/// changes the text of tokens already printed; that happens with byte fallback (LLaMA's
/// `<0xNN>` tokens), whose decoder turns a whole run of byte tokens into one `\u{FFFD}` per token
/// once the run is not valid UTF-8, including characters the run had already completed. A model
/// sampling a stray byte token must not end generation, so such a run is decoded apart from the
/// context instead (`apart`).
pub struct HfStream<'a> {
    tok: &'a tokenizers::Tokenizer,
    /// The context, then the tokens not printed yet.
    ids: Vec<u32>,
    context: usize,
    /// The context's text.
    prefix: String,
}

impl<'a> HfStream<'a> {
    fn new(tok: &'a tokenizers::Tokenizer, context: Vec<u32>, prefix: String) -> Self {
        HfStream {
            tok,
            context: context.len(),
            ids: context,
            prefix,
        }
    }

    fn step(&mut self, id: u32) -> Result<Vec<u8>> {
        const HELD: char = '\u{FFFD}';
        if self.prefix.is_empty() && !self.ids.is_empty() {
            // Tokens that printed nothing (a first `▁` whose space is stripped, special tokens)
            // become context as soon as they decode to whole characters.
            let p = hf_decode(self.tok, &self.ids)?;
            if !p.ends_with(HELD) {
                self.prefix = p;
                self.context = self.ids.len();
            }
        }
        self.ids.push(id);
        let text = hf_decode(self.tok, &self.ids)?;
        if text.len() <= self.prefix.len() || text.ends_with(HELD) {
            return Ok(Vec::new());
        }
        let new = match text.strip_prefix(self.prefix.as_str()) {
            Some(t) => t.to_string(),
            None => self.apart()?,
        };
        self.ids.drain(..self.context);
        self.context = self.ids.len();
        self.prefix = hf_decode(self.tok, &self.ids)?;
        Ok(new.into_bytes())
    }

    /// What the tokens still held back decode to, lossily (an unfinished byte run becomes
    /// U+FFFD, as the tokenizer's own `decode` prints it): the end of a generation.
    fn finish(&mut self) -> Result<Vec<u8>> {
        if self.ids.len() <= self.context {
            return Ok(Vec::new());
        }
        let text = hf_decode(self.tok, &self.ids)?;
        let new = match text.strip_prefix(self.prefix.as_str()) {
            Some(t) => t.to_string(),
            None => self.apart()?,
        };
        self.ids.drain(..);
        self.context = 0;
        self.prefix.clear();
        Ok(new.into_bytes())
    }

    /// The text of the pending tokens when decoding them after the context changed the
    /// context's own text: they are decoded after the context and a separator token that ends
    /// any run of byte tokens there, so the context's characters stay as printed. The separator's
    /// text is in both decodings and cancels out, as do the context's leading-space rules.
    fn apart(&self) -> Result<String> {
        let stuck = || {
            Error::invalid(
                "tokenizer",
                format!(
                    "token {} changes the text of tokens already printed",
                    self.ids.last().copied().unwrap_or_default()
                ),
            )
        };
        let sep = self
            .tok
            .encode("a", false)
            .ok()
            .and_then(|e| e.get_ids().last().copied())
            .filter(|&s| {
                self.tok
                    .id_to_token(s)
                    .is_some_and(|t| !(t.len() == 6 && t.starts_with("<0x")))
            })
            .ok_or_else(stuck)?;
        let mut with = self.ids[..self.context].to_vec();
        with.push(sep);
        let head = hf_decode(self.tok, &with)?;
        with.extend_from_slice(&self.ids[self.context..]);
        let all = hf_decode(self.tok, &with)?;
        all.strip_prefix(head.as_str())
            .map(str::to_string)
            .ok_or_else(stuck)
    }
}

impl TokenStream<'_> {
    pub fn step(&mut self, id: u32) -> Result<Vec<u8>> {
        match self {
            // Ids past 255 in a byte model are its special tokens: they print nothing.
            TokenStream::Bytes => Ok(u8::try_from(id).map(|b| vec![b]).unwrap_or_default()),
            TokenStream::Hf(s) => s.step(id),
        }
    }
    /// The bytes of tokens still held back (an unfinished character at the end of the output),
    /// lossily; call once after the last token.
    pub fn finish(&mut self) -> Result<Vec<u8>> {
        match self {
            TokenStream::Bytes => Ok(Vec::new()),
            TokenStream::Hf(s) => s.finish(),
        }
    }
}
