//! YAML to JSON with source spans.
//!
//! Policy files are parsed from saphyr's event stream into `serde_json`
//! values, recording the span of every key and value by JSON pointer, so
//! that schema errors and lint findings point at the exact line and column.
//!
//! The builder keeps its own explicit stack (no recursion), so hostile input
//! cannot overflow the stack, and it refuses what would make a policy read
//! differently to a reviewer than to lifeboat: anchors, aliases (and so alias
//! bombs), merge keys (`<<`) and custom tags. Duplicate keys are errors.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr::{Scalar, ScalarStyle, Tag};
use saphyr_parser::{Event, Marker, Parser, Span as YSpan};
use serde_json::{Map, Number, Value};

use crate::diagnostic::{Code, Diagnostic, Span};

/// Largest policy file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 64;

/// Spans of a node: its key in the parent mapping (if any) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpan {
    pub key: Option<Span>,
    pub value: Span,
}

/// Spans of every node of a document, by JSON pointer (`""` is the root).
#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    nodes: HashMap<String, NodeSpan>,
}

impl SpanIndex {
    pub fn get(&self, pointer: &str) -> Option<NodeSpan> {
        self.nodes.get(pointer).copied()
    }

    /// The span of the value at `pointer`, or of its nearest ancestor.
    pub fn value(&self, pointer: &str) -> Option<Span> {
        self.nearest(pointer).map(|n| n.value)
    }

    /// The span of the key at `pointer` (falling back to its value, then to
    /// the nearest ancestor): where to point for "this field is wrong".
    pub fn key_or_value(&self, pointer: &str) -> Option<Span> {
        self.nearest(pointer).map(|n| n.key.unwrap_or(n.value))
    }

    fn nearest(&self, pointer: &str) -> Option<NodeSpan> {
        let mut p = pointer;
        loop {
            if let Some(n) = self.nodes.get(p) {
                return Some(*n);
            }
            p = &p[..p.rfind('/')?];
        }
    }
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct YamlDocument {
    /// Position of the document in its file, from 0.
    pub index: usize,
    pub value: Value,
    pub spans: SpanIndex,
    /// Whether loading it reported an error (then it is not validated further).
    pub failed: bool,
}

/// Escapes a mapping key for use in a JSON pointer (RFC 6901).
pub fn escape_pointer(key: &str) -> Cow<'_, str> {
    if key.contains(['~', '/']) {
        Cow::Owned(key.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(key)
    }
}

/// Converts saphyr's character positions into byte offsets and 1-based columns.
struct Positions<'a> {
    text: &'a str,
    /// Byte offset of each character; empty when the text is ASCII.
    char_bytes: Vec<usize>,
}

impl<'a> Positions<'a> {
    fn new(text: &'a str) -> Self {
        let char_bytes = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices().map(|(b, _)| b).collect()
        };
        Positions { text, char_bytes }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.char_bytes.is_empty() {
            char_index.min(self.text.len())
        } else {
            self.char_bytes
                .get(char_index)
                .copied()
                .unwrap_or(self.text.len())
        }
    }

    fn span(&self, start: Marker, end: Marker) -> Span {
        let offset = self.byte(start.index());
        let end_offset = self.byte(end.index()).max(offset);
        Span {
            offset,
            len: end_offset - offset,
            line: start.line(),
            column: start.col() + 1,
            end_line: end.line().max(start.line()),
            end_column: if end.line() > start.line() {
                end.col() + 1
            } else {
                (end.col() + 1).max(start.col() + 1)
            },
        }
    }

    fn point(&self, at: Marker) -> Span {
        self.span(at, at)
    }
}

enum Frame {
    Map {
        map: Map<String, Value>,
        pointer: String,
        start: Marker,
        /// The key waiting for its value, with its span.
        key: Option<(String, Span)>,
    },
    Seq {
        items: Vec<Value>,
        pointer: String,
        start: Marker,
    },
}

/// Parses `text` (the contents of `file`) into documents.
///
/// Problems are returned as diagnostics; a document with an error is still
/// returned, marked `failed`, so that callers can count it.
pub fn parse(file: &str, text: &str) -> (Vec<YamlDocument>, Vec<Diagnostic>) {
    let mut b = Builder {
        file,
        pos: Positions::new(text),
        docs: Vec::new(),
        diags: Vec::new(),
        stack: Vec::new(),
        doc: None,
        reported_anchor: false,
        reported_alias: false,
    };
    for event in Parser::new_from_str(text) {
        match event {
            Ok((event, span)) => {
                if !b.event(event, span) {
                    break;
                }
            }
            Err(err) => {
                let at = b.pos.point(*err.marker());
                let diagnostic = if err.info().contains("recursion limit") {
                    // The scanner's own guard against deeply nested flow collections.
                    too_deep()
                } else {
                    Diagnostic::new(Code::InvalidYaml, format!("invalid YAML: {}", err.info()))
                        .with_help("fix the syntax at this position; `yamllint` shows more detail")
                };
                b.diags.push(diagnostic.at(file, Some(at)));
                if let Some(doc) = b.doc.as_mut() {
                    doc.failed = true;
                }
                b.finish_document();
                break;
            }
        }
    }
    (b.docs, b.diags)
}

struct Builder<'f, 't> {
    file: &'f str,
    pos: Positions<'t>,
    docs: Vec<YamlDocument>,
    diags: Vec<Diagnostic>,
    stack: Vec<Frame>,
    doc: Option<YamlDocument>,
    /// Anchors and aliases are reported once per document: an alias bomb
    /// would otherwise produce thousands of identical findings.
    reported_anchor: bool,
    reported_alias: bool,
}

impl Builder<'_, '_> {
    /// Handles one event; returns false to stop parsing the file.
    fn event(&mut self, event: Event<'_>, span: YSpan) -> bool {
        let is_map = matches!(event, Event::MappingStart(..));
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => true,
            Event::DocumentStart(_) => {
                self.reported_anchor = false;
                self.reported_alias = false;
                self.doc = Some(YamlDocument {
                    index: self.docs.len(),
                    value: Value::Null,
                    spans: SpanIndex::default(),
                    failed: false,
                });
                true
            }
            Event::DocumentEnd => {
                self.finish_document();
                true
            }
            Event::Alias(_) => {
                if !self.reported_alias {
                    self.reported_alias = true;
                    self.unsupported(
                        span,
                        "YAML aliases (`*name`) are not allowed in policy files",
                        "write the value out in full: policies must read the same to a reviewer as to lifeboat",
                    );
                }
                self.complete(Value::Null, span.start, span.end);
                true
            }
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 {
                    self.anchor(span);
                }
                self.tag(tag.as_deref(), span);
                let is_plain = style == ScalarStyle::Plain;
                let value = resolve_scalar(value, style, tag.as_ref());
                if self.awaiting_key() {
                    let key = match value {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    if is_plain && key == "<<" {
                        self.unsupported(
                            span,
                            "YAML merge keys (`<<`) are not allowed in policy files",
                            "write the merged fields out in full: policies must read the same to a reviewer as to lifeboat",
                        );
                    }
                    self.key(key, span);
                } else {
                    self.complete(value, span.start, span.end);
                }
                true
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                if anchor != 0 {
                    self.anchor(span);
                }
                self.tag(tag.as_deref(), span);
                if self.awaiting_key() {
                    self.fail(
                        Diagnostic::new(
                            Code::UnsupportedYaml,
                            "complex mapping keys (a mapping or sequence used as a key) are not allowed",
                        )
                        .with_help("use a plain string as the key"),
                        span,
                    );
                    self.key(String::new(), span);
                }
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(too_deep(), span);
                    self.finish_document();
                    return false;
                }
                let pointer = self.child_pointer();
                self.stack.push(if is_map {
                    Frame::Map {
                        map: Map::new(),
                        pointer,
                        start: span.start,
                        key: None,
                    }
                } else {
                    Frame::Seq {
                        items: Vec::new(),
                        pointer,
                        start: span.start,
                    }
                });
                true
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, start) = match self.stack.pop() {
                    Some(Frame::Map { map, start, .. }) => (Value::Object(map), start),
                    Some(Frame::Seq { items, start, .. }) => (Value::Array(items), start),
                    None => return true,
                };
                self.complete(value, start, span.end);
                true
            }
        }
    }

    fn awaiting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    /// The JSON pointer of the node about to start.
    fn child_pointer(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Map { pointer, key, .. }) => {
                let k = key.as_ref().map(|(k, _)| k.as_str()).unwrap_or("");
                format!("{pointer}/{}", escape_pointer(k))
            }
            Some(Frame::Seq { pointer, items, .. }) => format!("{pointer}/{}", items.len()),
        }
    }

    fn key(&mut self, key: String, span: YSpan) {
        let key_span = self.pos.span(span.start, span.end);
        let mut duplicate = false;
        if let Some(Frame::Map { map, key: slot, .. }) = self.stack.last_mut() {
            duplicate = map.contains_key(&key);
            *slot = Some((key.clone(), key_span));
        }
        if duplicate {
            self.fail(
                Diagnostic::new(
                    Code::DuplicateKey,
                    format!("the key `{key}` appears twice in this mapping"),
                )
                .with_help("remove one of them: YAML parsers disagree about which one wins"),
                span,
            );
        }
    }

    /// Stores a finished node in its parent (or as the document root).
    fn complete(&mut self, value: Value, start: Marker, end: Marker) {
        let pointer = self.child_pointer();
        let value_span = self.pos.span(start, end);
        let Some(doc) = self.doc.as_mut() else {
            return;
        };
        match self.stack.last_mut() {
            None => {
                doc.spans.nodes.insert(
                    pointer,
                    NodeSpan {
                        key: None,
                        value: value_span,
                    },
                );
                doc.value = value;
            }
            Some(Frame::Map { map, key, .. }) => {
                let (k, key_span) = key.take().unwrap_or_default();
                doc.spans.nodes.entry(pointer).or_insert(NodeSpan {
                    key: Some(key_span),
                    value: value_span,
                });
                map.entry(k).or_insert(value);
            }
            Some(Frame::Seq { items, .. }) => {
                doc.spans.nodes.insert(
                    pointer,
                    NodeSpan {
                        key: None,
                        value: value_span,
                    },
                );
                items.push(value);
            }
        }
    }

    fn finish_document(&mut self) {
        self.stack.clear();
        if let Some(doc) = self.doc.take() {
            self.docs.push(doc);
        }
    }

    fn fail(&mut self, diagnostic: Diagnostic, span: YSpan) {
        let at = self.pos.span(span.start, span.end);
        self.diags.push(diagnostic.at(self.file, Some(at)));
        if let Some(doc) = self.doc.as_mut() {
            doc.failed = true;
        }
    }

    fn unsupported(&mut self, span: YSpan, message: &str, help: &str) {
        self.fail(
            Diagnostic::new(Code::UnsupportedYaml, message).with_help(help),
            span,
        );
    }

    fn anchor(&mut self, span: YSpan) {
        if std::mem::replace(&mut self.reported_anchor, true) {
            return;
        }
        self.unsupported(
            span,
            "YAML anchors (`&name`) are not allowed in policy files",
            "remove the anchor and write every value out in full: policies must read the same to a reviewer as to lifeboat",
        );
    }

    fn tag(&mut self, tag: Option<&Tag>, span: YSpan) {
        if let Some(tag) = tag
            && !tag.is_yaml_core_schema()
        {
            self.unsupported(
                span,
                &format!(
                    "the YAML tag `{}{}` is not allowed in policy files",
                    tag.handle, tag.suffix
                ),
                "remove the tag; lifeboat documents use plain YAML values",
            );
        }
    }
}

fn too_deep() -> Diagnostic {
    Diagnostic::new(
        Code::TooDeep,
        format!("the YAML nests more than {MAX_DEPTH} levels deep"),
    )
    .with_help("no lifeboat document nests this deep; check the file is the one you meant")
}

/// Resolves a scalar by the YAML 1.2 core schema (`yes` stays a string).
fn resolve_scalar(value: Cow<'_, str>, style: ScalarStyle, tag: Option<&Cow<'_, Tag>>) -> Value {
    let raw = value.to_string();
    match Scalar::parse_from_cow_and_metadata(value, style, tag) {
        Some(Scalar::Null) => Value::Null,
        Some(Scalar::Boolean(b)) => Value::Bool(b),
        Some(Scalar::Integer(i)) => Value::Number(i.into()),
        Some(Scalar::FloatingPoint(f)) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or(Value::String(raw)),
        Some(Scalar::String(s)) => Value::String(s.into_owned()),
        None => Value::String(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(text: &str) -> Vec<&'static str> {
        parse("f.yaml", text)
            .1
            .iter()
            .map(|d| d.code.id())
            .collect()
    }

    #[test]
    fn values_and_spans() {
        let text = "a: 1\nb:\n  - x\n  - \"yes\"\nc: yes\nd: ~\ne: 1.5\n";
        let (docs, diags) = parse("f.yaml", text);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(docs.len(), 1);
        assert_eq!(
            docs[0].value,
            json!({"a": 1, "b": ["x", "yes"], "c": "yes", "d": null, "e": 1.5})
        );
        let b1 = docs[0].spans.get("/b/1").unwrap();
        assert_eq!((b1.value.line, b1.value.column), (4, 5));
        let c = docs[0].spans.get("/c").unwrap();
        assert_eq!((c.key.unwrap().line, c.key.unwrap().column), (5, 1));
        assert_eq!((c.value.line, c.value.column), (5, 4));
    }

    #[test]
    fn multi_document_and_unicode_columns() {
        let text = "---\nname: é\nx: 1\n---\ny: ü\n";
        let (docs, diags) = parse("f.yaml", text);
        assert!(diags.is_empty());
        assert_eq!(docs.len(), 2);
        let y = docs[1].spans.get("/y").unwrap().value;
        assert_eq!((y.line, y.column), (5, 4));
        assert_eq!(&text[y.offset..y.offset + y.len], "ü");
    }

    #[test]
    fn rejects_indirection() {
        assert_eq!(codes("a: &x 1\nb: *x\n"), ["LB002", "LB002"]);
        assert_eq!(codes("base: {a: 1}\nother:\n  <<: {a: 2}\n"), ["LB002"]);
        assert_eq!(codes("a: !custom 1\n"), ["LB002"]);
        assert!(codes("a: !!str 1\n").is_empty());
    }

    #[test]
    fn rejects_duplicate_keys() {
        let (docs, diags) = parse("f.yaml", "a: 1\nb: 2\na: 3\n");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, Code::DuplicateKey);
        assert_eq!(diags[0].span.unwrap().line, 3);
        assert!(docs[0].failed);
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let text = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(codes(&text), ["LB005"]);
        let text = (0..200)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect::<String>();
        assert_eq!(codes(&text), ["LB005"]);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let (_, diags) = parse("f.yaml", "a: [1, 2\nb: 3\n");
        assert_eq!(diags[0].code, Code::InvalidYaml);
        assert!(diags[0].span.unwrap().line >= 1);
    }

    #[test]
    fn pointer_escaping() {
        let (docs, _) = parse("f.yaml", "a/b:\n  c~d: 1\n");
        assert!(docs[0].spans.get("/a~1b/c~0d").is_some());
    }
}
