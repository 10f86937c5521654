//! How deep a document nests, and parsing it so that no nesting can overflow a stack: the
//! pre-scan of the text, the parse on a stack sized for its brackets, and the parsed
//! document's depth. The `graphql_nesting` fuzz target checks that the scan and the parser
//! agree.

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, Value};

use super::guardrails::{MAX_NESTING, parse_error, with_code};
use crate::error::code;

/// Stack the parser runs on: a base, plus an upper bound of what one nesting level costs the
/// parser (pest's rules, then async-graphql's conversion of its pairs, in an unoptimised build)
/// for every opening bracket in the text. A document cannot nest deeper than it has opening
/// brackets, so however the text reads, parsing it cannot run out of stack: a disagreement
/// between [`bracket_depth`] and the grammar costs a refusal, never the process. The memory is
/// reserved, not touched: only the levels a document really has use any. The test
/// `parsing_cannot_overflow_whatever_the_text_nests` parses documents as deep as they are long.
const PARSE_STACK_BASE: usize = 1 << 20;
const PARSE_STACK_PER_BRACKET: usize = 8 * 1024;
/// A document with more opening brackets than this is refused unparsed (it would need more
/// than 1 GiB of reserved stack); the default `MAX_QUERY_LENGTH` keeps well below it.
pub const MAX_BRACKETS: usize = ((1 << 30) - PARSE_STACK_BASE) / PARSE_STACK_PER_BRACKET;

/// Parses a document on a stack sized for its brackets (see [`PARSE_STACK_PER_BRACKET`]), and
/// refuses it there when its parsed form nests deeper than [`MAX_NESTING`]: everything that
/// recurses on the document later (the checks here, async-graphql's validation and execution,
/// dropping it) then works on a bounded depth, on an ordinary worker's stack.
pub fn parse_bounded(query: &str) -> Result<ExecutableDocument, ServerError> {
    let brackets = query.bytes().filter(|b| matches!(b, b'{' | b'[' | b'(')).count();
    if brackets > MAX_BRACKETS {
        let message = format!("The document has more than {MAX_BRACKETS} brackets.");
        return Err(with_code(ServerError::new(message, None), code::GRAPHQL_PARSE_FAILED));
    }
    // On the current stack when enough of it is left (a short document on a worker), else on a
    // new one of that size: either way the parse has the room its brackets could need.
    let needed = PARSE_STACK_BASE + brackets * PARSE_STACK_PER_BRACKET;
    stacker::maybe_grow(needed, needed, || {
        let document = async_graphql::parser::parse_query(query).map_err(parse_error)?;
        if document_depth(&document) > MAX_NESTING {
            // Dropped here, on the large stack: dropping a deep document recurses too.
            drop(document);
            return Err(too_deep());
        }
        Ok(document)
    })
}

fn too_deep() -> ServerError {
    let message = format!("The document nests brackets more than {MAX_NESTING} deep.");
    with_code(ServerError::new(message, None), code::GRAPHQL_PARSE_FAILED)
}

/// Refuses a document nested deeper than [`MAX_NESTING`], before the parser sees it: a cheap
/// first refusal of the obvious attack. [`parse_bounded`] checks the parsed document again, so
/// this scan is an optimisation, not the defence.
pub fn check_nesting(query: &str) -> Result<(), ServerError> {
    if bracket_depth(query) > MAX_NESTING { Err(too_deep()) } else { Ok(()) }
}

/// The deepest nesting of `{`, `[` and `(` in a document's text, reading strings, block
/// strings and comments as async-graphql-parser's grammar does (`graphql.pest`), so that on
/// every document the parser accepts it equals [`document_depth`] of the parsed document (the
/// `graphql_nesting` fuzz target checks exactly that). One pass over the bytes.
///
/// The grammar's rules that matter: a comment runs from `#` to a line terminator (`\n` or
/// `\r`); a block string runs from `"""` to the next `"""` not escaped as `\"""`, and when
/// there is none the grammar backtracks and reads `""` as an empty string (the third quote
/// then opens an ordinary string); an ordinary string ends at `"` and its escapes are two
/// bytes (`\u` is followed by hex digits, which are plain text here). Where a string is not
/// valid the parser stops there, so what the scan does after it does not matter.
pub fn bracket_depth(query: &str) -> usize {
    let b = query.as_bytes();
    let (mut i, mut depth, mut deepest) = (0usize, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => match block_string_end(b, i + 3) {
                // `i` at the last quote of the closing delimiter.
                Some(end) => i = end + 2,
                // No closing delimiter: `""`, an empty string; the third quote comes next.
                None => i += 1,
            },
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' && b[i] != b'\r' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// Where the block string whose content starts at `from` ends: the index of its closing
/// `"""`, skipping `\"""` (an escaped delimiter); `None` if it is not closed.
fn block_string_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        if b[i..].starts_with(b"\\\"\"\"") {
            i += 4;
        } else if b[i..].starts_with(b"\"\"\"") {
            return Some(i);
        } else {
            i += 1;
        }
    }
    None
}

/// The deepest bracket nesting of a parsed document, counted as its text would be: a
/// selection set, an argument list, a variable list, a list or object value and a list type
/// each open one level.
pub fn document_depth(doc: &ExecutableDocument) -> usize {
    use async_graphql::parser::types::{Directive, VariableDefinition};

    fn directives(ds: &[async_graphql::Positioned<Directive>], at: usize) -> usize {
        ds.iter().flat_map(|d| d.node.arguments.iter()).map(|(_, v)| at + 1 + value_depth(&v.node)).max().unwrap_or(at)
    }
    fn variables(vs: &[async_graphql::Positioned<VariableDefinition>]) -> usize {
        vs.iter()
            .map(|v| {
                let v = &v.node;
                let ty = 1 + type_depth(&v.var_type.node);
                let default = v.default_value.as_ref().map_or(0, |d| 1 + const_depth(&d.node));
                ty.max(default).max(directives(&v.directives, 1))
            })
            .max()
            .unwrap_or(0)
    }
    fn set(s: &SelectionSet, at: usize) -> usize {
        if s.items.is_empty() {
            return at;
        }
        let inner = at + 1;
        s.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(f) => {
                    let f = &f.node;
                    let args = f.arguments.iter().map(|(_, v)| inner + 1 + value_depth(&v.node)).max().unwrap_or(inner);
                    args.max(directives(&f.directives, inner)).max(set(&f.selection_set.node, inner))
                }
                Selection::FragmentSpread(s) => directives(&s.node.directives, inner),
                Selection::InlineFragment(i) => {
                    directives(&i.node.directives, inner).max(set(&i.node.selection_set.node, inner))
                }
            })
            .fold(inner, usize::max)
    }
    let operations = doc.operations.iter().map(|(_, op)| {
        let op = &op.node;
        variables(&op.variable_definitions).max(directives(&op.directives, 0)).max(set(&op.selection_set.node, 0))
    });
    let fragments =
        doc.fragments.values().map(|f| directives(&f.node.directives, 0).max(set(&f.node.selection_set.node, 0)));
    operations.chain(fragments).max().unwrap_or(0)
}

fn value_depth(v: &async_graphql_value::Value) -> usize {
    use async_graphql_value::Value as V;
    match v {
        V::List(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        V::Object(fields) => 1 + fields.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn const_depth(v: &Value) -> usize {
    match v {
        Value::List(items) => 1 + items.iter().map(const_depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(const_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn type_depth(t: &async_graphql::parser::types::Type) -> usize {
    match &t.base {
        async_graphql::parser::types::BaseType::Named(_) => 0,
        async_graphql::parser::types::BaseType::List(inner) => 1 + type_depth(inner),
    }
}
