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
        let bytes_model = cfg.tokenizer.as_deref() == Some("bytes");
        if bytes_model || (!file.exists() && cfg.vocab_size == 256) {
            if cfg.vocab_size < 256 {
                return Err(Error::Checkpoint {
                    file: dir.join("config.json").display().to_string(),
                    msg: format!(
                        "a byte-level model needs vocab_size ≥ 256, got {}",
                        cfg.vocab_size
                    ),
                });
            }
            return Ok(Tokenizer::Bytes);
        }
        let name = file.display().to_string();
        if !file.exists() {
            return Err(Error::Checkpoint {
                file: name,
                msg: format!(
                    "missing: the model has vocab_size {} and config.json does not say \
                     \"tokenizer\": \"bytes\"; add the model's tokenizer.json",
                    cfg.vocab_size
                ),
            });
        }
        let tok = tokenizers::Tokenizer::from_file(&file).map_err(|e| Error::Checkpoint {
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
        let mut s = self.stream();
        let mut out = Vec::new();
        for &id in ids {
            out.extend(s.step(id)?);
        }
        Ok(out)
    }

    /// An incremental decoder: each id yields the bytes it completes (multi-token characters are
    /// held back until whole, so streamed output is never split inside a UTF-8 sequence).
    pub fn stream(&self) -> TokenStream<'_> {
        match self {
            Tokenizer::Bytes => TokenStream::Bytes,
            Tokenizer::Hf(t) => TokenStream::Hf(Box::new(t.decode_stream(true))),
        }
    }
}

pub enum TokenStream<'a> {
    Bytes,
    Hf(
        Box<
            tokenizers::DecodeStream<
                'a,
                tokenizers::ModelWrapper,
                tokenizers::NormalizerWrapper,
                tokenizers::PreTokenizerWrapper,
                tokenizers::PostProcessorWrapper,
                tokenizers::DecoderWrapper,
            >,
        >,
    ),
}

impl TokenStream<'_> {
    pub fn step(&mut self, id: u32) -> Result<Vec<u8>> {
        match self {
            // Ids past 255 in a byte model are its special tokens: they print nothing.
            TokenStream::Bytes => Ok(u8::try_from(id).map(|b| vec![b]).unwrap_or_default()),
            TokenStream::Hf(s) => Ok(s
                .step(id)
                .map_err(|e| Error::invalid("tokenizer", format!("cannot decode token {id}: {e}")))?
                .map(String::into_bytes)
                .unwrap_or_default()),
        }
    }
}
