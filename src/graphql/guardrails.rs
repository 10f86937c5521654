//! The checks the schema builder does not have (aliases, directives, introspection off), run
//! on each request's parsed document before async-graphql validates and executes it, and a
//! bounded cache of parsed documents.
//!
//! They run here, around the executor, rather than as an async-graphql extension: with any
//! extension registered, async-graphql sends every field and list item through the extension
//! chain (a registry lookup, type-name strings and a boxed future each), which made resolving
//! a 9-account answer a third of a request's CPU.
//!
//! Apps send the same few operations over and over, with their values in `variables`; parsing
//! was a sixth of a request's CPU. A document parsed once is kept (keyed by the exact query
//! text) and cloned for each request, and goes through every check as a fresh one does:
//! depth, complexity, recursion and directive limits and validation run on every request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Pos, ServerError, Value, Variables};

use crate::error::code;

pub use super::nesting::{MAX_BRACKETS, bracket_depth, check_nesting, document_depth, parse_bounded};

/// Query text the document cache holds at most, in bytes. A parsed document takes roughly ten
/// times its text, so the cache stays within a few megabytes whatever clients send.
const CACHE_BYTES: u64 = 512 * 1024;
/// Longer queries are parsed every time (they are rare, and would crowd out the common ones).
const CACHE_MAX_QUERY_BYTES: usize = 16 * 1024;

/// A document that passed the checks, and the label of its metrics.
#[derive(Clone)]
pub struct Prepared {
    pub document: Arc<ExecutableDocument>,
    /// The request's root fields, sorted (`getPlaidBankAccounts`, `introspection` for a
    /// request that asks only for `__schema`, `__type` or `__typename`). Schema field names
    /// only, so the label set stays bounded whatever clients send.
    pub fields: Arc<str>,
    /// The name of the document's only operation (`query Mine { … }`), if it has one.
    pub name: Option<Arc<str>>,
}

#[derive(Clone)]
struct QueryBytes;

impl quick_cache::Weighter<String, Prepared> for QueryBytes {
    fn weight(&self, query: &String, _: &Prepared) -> u64 {
        query.len().max(1) as u64
    }
}

/// Refuses documents with too many aliases or directives (alias and directive overload), and
/// introspection when it is switched off.
pub struct Guardrails {
    max_aliases: usize,
    max_directives: usize,
    introspection: bool,
    /// The schema's root fields (of Query and Mutation): the only names a label may carry.
    root_fields: HashSet<String>,
    /// The directives the schema defines: the only ones a document may use.
    directives: HashSet<String>,
    /// The input types a variable may have (see `super::variable_types`).
    input_types: HashSet<String>,
    documents: quick_cache::sync::Cache<String, Prepared, QueryBytes>,
}

impl Guardrails {
    /// `sdl` is the schema's SDL, from which the root fields are read.
    pub fn new(max_aliases: usize, max_directives: usize, introspection: bool, sdl: &str) -> Self {
        Guardrails {
            max_aliases,
            max_directives,
            introspection,
            root_fields: root_fields(sdl),
            directives: super::directives::defined_in(sdl),
            input_types: super::variable_types::input_types_in(sdl),
            documents: quick_cache::sync::Cache::with_weighter(1024, CACHE_BYTES, QueryBytes),
        }
    }

    /// Parses `query` (or finds it parsed) and checks it. A document that does not parse is
    /// refused with `GRAPHQL_PARSE_FAILED`, one that breaks a limit with
    /// `GRAPHQL_VALIDATION_FAILED`; neither is cached.
    pub fn prepare(&self, query: &str) -> Result<Prepared, ServerError> {
        if let Some(p) = self.documents.get(query) {
            return Ok(p);
        }
        check_nesting(query)?;
        let document = parse_bounded(query)?;
        check_fragments(&document)?;
        let fields = self.check(&document)?;
        let name = match &document.operations {
            DocumentOperations::Multiple(ops) if ops.len() == 1 => ops.keys().next().map(|n| Arc::from(n.as_str())),
            _ => None,
        };
        let prepared = Prepared { document: Arc::new(document), fields, name };
        if query.len() <= CACHE_MAX_QUERY_BYTES {
            self.documents.insert(query.to_string(), prepared.clone());
        }
        Ok(prepared)
    }

    /// How many parsed documents are kept now.
    pub fn cached_documents(&self) -> usize {
        self.documents.len()
    }

    fn check(&self, doc: &ExecutableDocument) -> Result<Arc<str>, ServerError> {
        if !self.introspection
            && doc
                .operations
                .iter()
                .any(|(_, op)| asks_for_schema(&op.node.selection_set.node, doc, &mut HashSet::new()))
        {
            return Err(refuse("Introspection is disabled on this server.".into()));
        }
        if let Some((name, pos)) = super::directives::first_unknown(doc, &self.directives) {
            let mut e = refuse(format!("Unknown directive \"@{name}\"."));
            e.locations = vec![pos];
            return Err(e);
        }
        if let Some((name, pos)) = super::variable_types::first_unknown(doc, &self.input_types) {
            let mut e =
                refuse(format!("Unknown type \"{name}\": a variable's type must be one of the schema's input types."));
            e.locations = vec![pos];
            return Err(e);
        }
        let mut c = Counts::default();
        for (_, op) in doc.operations.iter() {
            c.directives += op.node.directives.len();
            walk(&op.node.selection_set.node, &mut c);
        }
        for f in doc.fragments.values() {
            c.directives += f.node.directives.len();
            walk(&f.node.selection_set.node, &mut c);
        }
        if c.aliases > self.max_aliases {
            return Err(refuse(format!(
                "The request uses {} aliases; at most {} are allowed.",
                c.aliases, self.max_aliases
            )));
        }
        if c.directives > self.max_directives {
            return Err(refuse(format!(
                "The request uses {} directives; at most {} are allowed.",
                c.directives, self.max_directives
            )));
        }
        // The document is not validated yet: a name the schema does not have becomes
        // `unknown`, so clients cannot mint metric series.
        let mut roots: Vec<&str> = Vec::new();
        for (_, op) in doc.operations.iter() {
            for item in &op.node.selection_set.node.items {
                if let Selection::Field(f) = &item.node
                    && !f.node.name.node.starts_with("__")
                {
                    let name = f.node.name.node.as_str();
                    roots.push(if self.root_fields.contains(name) { name } else { "unknown" });
                }
            }
        }
        roots.sort_unstable();
        roots.dedup();
        Ok(if roots.is_empty() { "introspection".into() } else { roots.join(",").into() })
    }
}

/// The deepest bracket nesting (`{`, `[`, `(`) a document may have. It stands in for the
/// recursion limit async-graphql's parser lacks: the parser caps nested selection sets at 64
/// (`MAX_RECURSION_DEPTH` in async-graphql-parser's `parse/executable.rs`), but list and object
/// values (`a: [[[…]]]`, also in variable defaults) and list types (`$v: [[[Int]]]`) recurse
/// without a limit, and about 1,500 levels overflow a worker's stack and abort the process.
/// 128 leaves room for the 64 selection sets plus any argument value this schema takes.
pub const MAX_NESTING: usize = 128;
/// Fragments in one document, and spreads of them.
pub const MAX_FRAGMENTS: usize = 64;
pub const MAX_SPREADS: usize = 256;
/// Selections in a document once every fragment spread is replaced by its fragment, counted
/// over every operation and fragment definition (validation visits each). The standard
/// introspection query needs about 300; a fragment "billion laughs" (each fragment spreading
/// the one below twice) needs 2^n and is refused here, before anything walks it.
pub const MAX_EXPANDED_SELECTIONS: u64 = 5_000;

/// Refuses a document with too many fragments or spreads, a fragment cycle, or more than
/// [`MAX_EXPANDED_SELECTIONS`] selections once expanded. Each fragment's expanded size is
/// computed once (memoised), so this is linear in the document whatever it spreads.
pub fn check_fragments(doc: &ExecutableDocument) -> Result<(), ServerError> {
    if doc.fragments.len() > MAX_FRAGMENTS {
        return Err(refuse(format!(
            "The request defines {} fragments; at most {MAX_FRAGMENTS} are allowed.",
            doc.fragments.len()
        )));
    }
    let mut sizes = Sizes { doc, memo: HashMap::new(), spreads: 0 };
    let mut total: u64 = 0;
    for (_, op) in doc.operations.iter() {
        total = total.saturating_add(sizes.of_set(&op.node.selection_set.node)?);
    }
    for name in doc.fragments.keys() {
        total = total.saturating_add(sizes.of_fragment(name)?);
    }
    if total > MAX_EXPANDED_SELECTIONS {
        return Err(refuse(format!(
            "The request expands to more than {MAX_EXPANDED_SELECTIONS} selections through its fragments."
        )));
    }
    Ok(())
}

/// Expanded sizes of fragments: `None` while one is being computed (a cycle if met again).
struct Sizes<'a> {
    doc: &'a ExecutableDocument,
    memo: HashMap<&'a str, Option<u64>>,
    spreads: usize,
}

impl<'a> Sizes<'a> {
    fn of_fragment(&mut self, name: &'a str) -> Result<u64, ServerError> {
        match self.memo.get(name) {
            Some(Some(n)) => return Ok(*n),
            Some(None) => return Err(refuse(format!("The fragment \"{name}\" spreads itself (a fragment cycle)."))),
            None => {}
        }
        // An unknown fragment is validation's to report; it expands to nothing here.
        let Some(fragment) = self.doc.fragments.get(name) else {
            return Ok(0);
        };
        self.memo.insert(name, None);
        let n = self.of_set(&fragment.node.selection_set.node)?;
        self.memo.insert(name, Some(n));
        Ok(n)
    }

    fn of_set(&mut self, set: &'a SelectionSet) -> Result<u64, ServerError> {
        let mut n: u64 = 0;
        for item in &set.items {
            let size = match &item.node {
                Selection::Field(f) => 1u64.saturating_add(self.of_set(&f.node.selection_set.node)?),
                Selection::InlineFragment(i) => self.of_set(&i.node.selection_set.node)?,
                Selection::FragmentSpread(s) => {
                    self.spreads += 1;
                    if self.spreads > MAX_SPREADS {
                        return Err(refuse(format!("The request has more than {MAX_SPREADS} fragment spreads.")));
                    }
                    self.of_fragment(s.node.fragment_name.node.as_str())?
                }
            };
            n = n.saturating_add(size);
            if n > MAX_EXPANDED_SELECTIONS {
                return Err(refuse(format!(
                    "The request expands to more than {MAX_EXPANDED_SELECTIONS} selections through its fragments."
                )));
            }
        }
        Ok(n)
    }
}

/// The fields of the `Query` and `Mutation` types of an SDL.
fn root_fields(sdl: &str) -> HashSet<String> {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let Ok(doc) = async_graphql::parser::parse_schema(sdl) else {
        return HashSet::new();
    };
    doc.definitions
        .iter()
        .filter_map(|d| match d {
            TypeSystemDefinition::Type(t) if matches!(t.node.name.node.as_str(), "Query" | "Mutation") => {
                match &t.node.kind {
                    TypeKind::Object(o) => Some(o.fields.iter().map(|f| f.node.name.node.to_string())),
                    _ => None,
                }
            }
            _ => None,
        })
        .flatten()
        .collect()
}

/// The rule of the spec's variable coercion that async-graphql leaves out: a variable of a
/// non-null type with no default must be given, and not as null. async-graphql reads a
/// missing one as false in `@include`/`@skip` (a silently different answer) and refuses it only
/// where an argument reads it. An operation it cannot pick is left to async-graphql to name.
pub fn check_required_variables(
    doc: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
) -> Result<(), ServerError> {
    let op = match (operation_name, &doc.operations) {
        (None, DocumentOperations::Single(op)) => op,
        (Some(name), DocumentOperations::Multiple(ops)) => match ops.get(name) {
            Some(op) => op,
            None => return Ok(()),
        },
        (None, DocumentOperations::Multiple(ops)) if ops.len() == 1 => ops.values().next().expect("one operation"),
        _ => return Ok(()),
    };
    for def in &op.node.variable_definitions {
        let d = &def.node;
        if d.var_type.node.nullable || d.default_value.is_some() {
            continue;
        }
        if matches!(variables.get(d.name.node.as_str()), None | Some(Value::Null)) {
            let message =
                format!("Variable \"${}\" of required type \"{}\" was not provided.", d.name.node, d.var_type.node);
            return Err(with_code(ServerError::new(message, Some(def.pos)), code::BAD_USER_INPUT));
        }
    }
    Ok(())
}

/// Whether a selection asks for the schema (`__schema` or `__type`) at its top level. Each
/// fragment is looked into once (`seen`), so a fragment spread many times costs nothing more.
fn asks_for_schema<'a>(set: &'a SelectionSet, doc: &'a ExecutableDocument, seen: &mut HashSet<&'a str>) -> bool {
    set.items.iter().any(|item| match &item.node {
        Selection::Field(f) => matches!(f.node.name.node.as_str(), "__schema" | "__type"),
        Selection::InlineFragment(i) => asks_for_schema(&i.node.selection_set.node, doc, seen),
        Selection::FragmentSpread(s) => {
            let name = s.node.fragment_name.node.as_str();
            seen.insert(name)
                && doc.fragments.get(name).is_some_and(|f| asks_for_schema(&f.node.selection_set.node, doc, seen))
        }
    })
}

#[derive(Default)]
struct Counts {
    aliases: usize,
    directives: usize,
}

fn walk(set: &SelectionSet, c: &mut Counts) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                c.aliases += usize::from(f.node.alias.is_some());
                c.directives += f.node.directives.len();
                walk(&f.node.selection_set.node, c);
            }
            Selection::FragmentSpread(s) => c.directives += s.node.directives.len(),
            Selection::InlineFragment(i) => {
                c.directives += i.node.directives.len();
                walk(&i.node.selection_set.node, c);
            }
        }
    }
}

/// A parse error as one line (the parser's own message draws the query with ASCII art over
/// several lines): where, and what was expected.
pub(super) fn parse_error(e: async_graphql::parser::Error) -> ServerError {
    let locations: Vec<Pos> = e.positions().collect();
    let message = match &e {
        async_graphql::parser::Error::Syntax { message, start, .. } => {
            let expected = message.lines().find_map(|l| l.trim().strip_prefix("= ")).map(str::trim);
            match expected {
                Some(x) => format!("Syntax error at line {}, column {}: {x}.", start.line, start.column),
                None => format!("Syntax error at line {}, column {}.", start.line, start.column),
            }
        }
        other => other.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "),
    };
    let mut err = ServerError::new(message, None);
    err.locations = locations;
    with_code(err, code::GRAPHQL_PARSE_FAILED)
}

/// The error with its `extensions.code`: how the gateway labels every error it raises itself.
pub(super) fn with_code(mut e: ServerError, code: &str) -> ServerError {
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", code);
    e.extensions = Some(ext);
    e
}

fn refuse(message: String) -> ServerError {
    with_code(ServerError::new(message, None), code::GRAPHQL_VALIDATION_FAILED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guardrails(aliases: usize, directives: usize, introspection: bool) -> Guardrails {
        Guardrails::new(aliases, directives, introspection, &crate::graphql::sdl())
    }

    #[test]
    fn labels_name_only_the_schemas_root_fields() {
        let g = guardrails(15, 10, true);
        assert_eq!(g.root_fields.len(), 8, "{:?}", g.root_fields);
        let p = g.prepare("{ getPlaidBankAccounts { bankAccountId } made_up_1 { x } made_up_2 }").unwrap();
        assert_eq!(&*p.fields, "getPlaidBankAccounts,unknown");
        let m = g.prepare("mutation { refreshPlaidBankConnections { status } }").unwrap();
        assert_eq!(&*m.fields, "refreshPlaidBankConnections");
        // A type's field is not a root field.
        assert_eq!(&*g.prepare("{ bankAccountId }").unwrap().fields, "unknown");
    }

    fn code(e: &ServerError) -> String {
        match e.extensions.as_ref().and_then(|x| x.get("code")) {
            Some(async_graphql::Value::String(s)) => s.clone(),
            other => panic!("no code: {other:?}"),
        }
    }

    #[test]
    fn a_document_is_parsed_once_and_labelled_by_its_root_fields() {
        let g = guardrails(15, 10, true);
        let q = "query Q($f: PlaidBankAccountFilterInput) { getPlaidBankAccounts(input: $f) { bankAccountId } getPlaidBankBalances { amount } }";
        let first = g.prepare(q).unwrap();
        assert_eq!(&*first.fields, "getPlaidBankAccounts,getPlaidBankBalances");
        assert_eq!(first.name.as_deref(), Some("Q"));
        let again = g.prepare(q).unwrap();
        assert!(Arc::ptr_eq(&first.document, &again.document), "the second request reuses the parse");
        assert_eq!(g.cached_documents(), 1);
        let anonymous = g.prepare("{ __typename }").unwrap();
        assert_eq!((&*anonymous.fields, anonymous.name), ("introspection", None));
        assert_eq!(g.prepare("query A { __typename } query B { __typename }").unwrap().name, None);
    }

    #[test]
    fn refusals_carry_their_code_and_are_not_cached() {
        let g = guardrails(2, 1, false);
        let cases = [
            ("{ getPlaidBankAccounts { ", "GRAPHQL_PARSE_FAILED"),
            ("{ a: __typename b: __typename c: __typename }", "GRAPHQL_VALIDATION_FAILED"),
            ("{ __typename @skip(if: false) @include(if: true) }", "GRAPHQL_VALIDATION_FAILED"),
            ("{ ...F } fragment F on Query { __schema { queryType { name } } }", "GRAPHQL_VALIDATION_FAILED"),
        ];
        for (q, want) in cases {
            for _ in 0..2 {
                let e = g.prepare(q).err().unwrap_or_else(|| panic!("{q} was accepted"));
                assert_eq!(code(&e), want, "{q}: {}", e.message);
            }
        }
        assert_eq!(g.cached_documents(), 0);
        // Within the limits, and introspection off only refuses the schema, not __typename.
        assert!(g.prepare("{ a: __typename b: __typename }").is_ok());
    }

    #[test]
    fn a_required_variable_must_be_given() {
        let g = guardrails(15, 10, true);
        let vars = |v: serde_json::Value| Variables::from_json(v);
        let p = g.prepare("query A($n: Boolean!, $m: Int, $d: Int! = 3) { __typename @include(if: $n) }").unwrap();
        let doc = &p.document;
        assert!(check_required_variables(doc, None, &vars(serde_json::json!({"n": true}))).is_ok());
        assert!(check_required_variables(doc, Some("A"), &vars(serde_json::json!({"n": false, "m": null}))).is_ok());
        for v in [serde_json::json!({}), serde_json::json!({"n": null, "d": 1})] {
            let e = check_required_variables(doc, None, &vars(v)).unwrap_err();
            assert_eq!(code(&e), "BAD_USER_INPUT");
            assert_eq!(e.message, "Variable \"$n\" of required type \"Boolean!\" was not provided.");
        }
        // Of two operations, the one named is checked; an unknown name is async-graphql's to report.
        let two = g.prepare("query A($n: Int!) { __typename } query B { __typename }").unwrap();
        assert!(check_required_variables(&two.document, Some("B"), &vars(serde_json::json!({}))).is_ok());
        assert!(check_required_variables(&two.document, Some("A"), &vars(serde_json::json!({}))).is_err());
        assert!(check_required_variables(&two.document, Some("C"), &vars(serde_json::json!({}))).is_ok());
    }

    #[test]
    fn nesting_is_bounded_before_parsing_and_the_bound_is_safe_on_a_worker_stack() {
        let g = guardrails(15, 10, true);
        let list = |n: usize| format!("{{ __typename(a: {}1{}) }}", "[".repeat(n), "]".repeat(n));
        let e = g.prepare(&list(MAX_NESTING)).err().expect("refused");
        assert_eq!(code(&e), "GRAPHQL_PARSE_FAILED");
        assert!(e.message.contains("nests"), "{}", e.message);
        // Just under the bound, the parser and every check run within a tokio worker's 2 MiB
        // stack, in this unoptimised build too.
        let under = list(MAX_NESTING - 2);
        let object = format!("query($v: Int = {}1{}) {{ __typename }}", "{a: ".repeat(120), "}".repeat(120));
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let g = guardrails(15, 10, true);
                assert!(g.prepare(&under).is_ok());
                assert!(g.prepare(&object).is_ok());
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        // Brackets in strings, block strings (with an escaped delimiter) and comments are text.
        let deep = "[".repeat(500);
        for q in [
            format!("{{ __typename(a: \"{deep}\\\"{deep}\") }}"),
            format!("{{ __typename(a: \"\"\"{deep} \\\"\"\" {deep}\"\"\") }}"),
            format!("{{ __typename # {deep}\n }}"),
        ] {
            assert!(check_nesting(&q).is_ok(), "{q}");
        }
        // An unterminated string or comment does not hide what follows from the parser.
        assert!(check_nesting("{ a(b: \"x").is_ok());
    }

    /// The payload that bypassed the first scanner: an unclosed `"""` that the grammar reads
    /// as `""` followed by an ordinary string, so the brackets after it are parsed.
    fn unclosed_block_string(levels: usize) -> String {
        format!("{{ __typename(a: [\"\"\" \" {}{} ]) }}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn an_unclosed_block_string_is_read_as_the_grammar_reads_it() {
        let q = unclosed_block_string(1500);
        assert_eq!(bracket_depth(&q), 1503);
        let e = check_nesting(&q).unwrap_err();
        assert_eq!(code(&e), "GRAPHQL_PARSE_FAILED");
        // The same text with the block string closed: the brackets are its content.
        let closed = format!("{{ __typename(a: [\"\"\" {} \"\"\"]) }}", "[".repeat(1500));
        assert_eq!(bracket_depth(&closed), 3);
        // Four quotes and no closing delimiter: `""` then `""`, two empty strings.
        assert_eq!(bracket_depth("{ a(b: [\"\"\"\" [[1]]]) }"), 5);
        // A comment ends at `\r` as at `\n`.
        assert_eq!(bracket_depth("{ a # [[[[\r(b: [1]) }"), 3);
        // Through every transport the whole check runs on a worker's stack without crashing.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let g = guardrails(15, 10, true);
                assert_eq!(code(&g.prepare(&q).err().expect("refused")), "GRAPHQL_PARSE_FAILED");
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
    }

    /// Without the scanner in front, the parser itself runs on a stack sized for the text:
    /// documents as deep as they are long (the default `MAX_QUERY_LENGTH`, 20,000) of every
    /// construct that recurses are refused after parsing, from a worker-sized stack. A
    /// per-bracket stack bound too small for this build would abort the test.
    #[test]
    fn parsing_cannot_overflow_whatever_the_text_nests() {
        let n = 20_000;
        let cases = [
            format!("{{ a(b: {}{}) }}", "[".repeat(n), "]".repeat(n)),
            format!("{{ a(b: {}1{}) }}", "{a: ".repeat(n / 4), "}".repeat(n / 4)),
            format!("query($v: {}Int{}) {{ a }}", "[".repeat(n), "]".repeat(n)),
            format!("query($v: Int = {}{}) {{ a }}", "[".repeat(n), "]".repeat(n)),
            format!("{{ a @d(b: {}{}) }}", "[".repeat(n), "]".repeat(n)),
            format!("{{ {} }}", "a { ".repeat(n / 4) + "b" + &" }".repeat(n / 4)),
            unclosed_block_string(n),
        ];
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                for q in &cases {
                    let e = parse_bounded(q).err().unwrap_or_else(|| panic!("accepted: {}", &q[..40]));
                    assert_eq!(code(&e), "GRAPHQL_PARSE_FAILED", "{}", e.message);
                }
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        let many = "[".repeat(MAX_BRACKETS + 1);
        assert!(parse_bounded(&many).unwrap_err().message.contains("brackets"));
    }

    /// The scanner and the parsed document agree on documents with every kind of bracket,
    /// string and comment (the `graphql_nesting` fuzz target searches for the rest).
    #[test]
    fn the_scan_and_the_parsed_document_agree() {
        let docs = [
            "{ a }",
            "query Q($a: [[Int!]!] = [[1]], $b: In = {x: {y: [2]}}) @d(x: [[[3]]]) { a }",
            "{ a(b: \"[[[\\\"[[\", c: \"\"\"{{{ \\\"\"\" (((\"\"\") { b { c { d(e: {}) } } } }",
            "{ ... on Q @s(x: [{a: [1]}]) { a } ...F @i(if: true) } fragment F on Q @f(a: [[[[1]]]]) { x { y } }",
            "# {{{{\n{ a(b: [] c: {}) # ((((\n }",
            "mutation { a(x: [\"\"\"\" \"[\"]) }",
            "{ a(b: [\"\"\" \" [[1]] ]) }",
        ];
        for q in docs {
            let doc = async_graphql::parser::parse_query(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!(bracket_depth(q), document_depth(&doc), "{q}");
        }
    }

    #[test]
    fn fragments_are_budgeted_by_their_expanded_size_once() {
        let laughs = |n: usize| {
            let mut q = format!("{{ ...F{n} }} fragment F0 on Query {{ __typename }}\n");
            for i in 1..=n {
                q.push_str(&format!("fragment F{i} on Query {{ ...F{} ...F{} }}\n", i - 1, i - 1));
            }
            q
        };
        let g = guardrails(15, 10, false);
        // 2^8 = 256 fields: within the budget, and the introspection check sees through them.
        assert!(g.prepare(&laughs(8)).is_ok());
        let started = std::time::Instant::now();
        for n in [13, 29, 60] {
            let e = g.prepare(&laughs(n)).err().expect("refused");
            assert_eq!(code(&e), "GRAPHQL_VALIDATION_FAILED", "{}", e.message);
            assert!(e.message.contains("fragments") || e.message.contains("spreads"), "{}", e.message);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "linear, not exponential");
        let cycle = g.prepare("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }").err().unwrap();
        assert!(cycle.message.contains("cycle"), "{}", cycle.message);
        let hidden =
            "{ ...F } fragment F on Query { ...G ...G ...G } fragment G on Query { __schema { queryType { name } } }";
        assert!(g.prepare(hidden).err().unwrap().message.contains("Introspection"));
        let many: String = (0..=MAX_FRAGMENTS).map(|i| format!("fragment X{i} on Query {{ __typename }} ")).collect();
        assert!(g.prepare(&format!("{{ ...X0 }} {many}")).err().unwrap().message.contains("fragments"));
    }

    #[test]
    fn a_parse_error_is_one_line_saying_where_and_what_was_expected() {
        let g = guardrails(15, 10, true);
        for query in ["{ a", "query { getPlaidBankAccounts(input: { }", "{ a(b: ) }", "}"] {
            let e = g.prepare(query).err().expect(query);
            assert_eq!(code(&e), "GRAPHQL_PARSE_FAILED");
            assert!(!e.message.contains('\n') && !e.message.contains("-->"), "{query}: {:?}", e.message);
            assert!(e.message.starts_with("Syntax error at line 1, column "), "{query}: {:?}", e.message);
            assert!(!e.locations.is_empty());
        }
        let e = g.prepare("{ a").err().unwrap();
        assert!(e.message.contains("expected"), "{:?}", e.message);
    }

    #[test]
    fn the_cache_stays_bounded_and_skips_long_queries() {
        let g = guardrails(15, 10, true);
        let long = format!("{{ __typename }} # {}", "x".repeat(CACHE_MAX_QUERY_BYTES));
        g.prepare(&long).unwrap();
        assert_eq!(g.cached_documents(), 0);
        // 60,000 distinct queries of 22 to 24 bytes: three times the byte budget.
        for i in 0..60_000 {
            g.prepare(&format!("{{ t{i}: __typename }}")).unwrap();
        }
        let held = g.cached_documents() as u64;
        assert!(held > 1000, "the cache still holds recent documents: {held}");
        assert!(held * 22 <= CACHE_BYTES + CACHE_BYTES / 10, "the byte budget bounds the cache: {held} held");
    }
}
