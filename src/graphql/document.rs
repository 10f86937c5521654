//! Facts read off a parsed document, for the gateway: which kind of operation a request
//! selects (GET runs queries only), and which arguments carry the caller's variables (an error
//! there is the caller's input).

use std::collections::HashSet;

use async_graphql::parser::Positioned;
use async_graphql::parser::types::{Directive, DocumentOperations, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Pos};

/// The kind of the operation a request selects (by `operationName`, or the document's only
/// one). `None` when the name selects nothing (validation reports that).
pub fn operation_type(
    doc: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<async_graphql::parser::types::OperationType> {
    let op = match (&doc.operations, operation_name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next()?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    Some(op.node.ty)
}

/// Where the document's arguments whose values use a variable are (their names' positions):
/// an error async-graphql reports there is about a value the caller sent.
pub fn arguments_with_variables(doc: &ExecutableDocument) -> HashSet<Pos> {
    use async_graphql_value::Value as Literal;
    fn uses_variable(v: &Literal) -> bool {
        match v {
            Literal::Variable(_) => true,
            Literal::List(items) => items.iter().any(uses_variable),
            Literal::Object(fields) => fields.values().any(uses_variable),
            _ => false,
        }
    }
    fn directives(ds: &[Positioned<Directive>], out: &mut HashSet<Pos>) {
        for d in ds {
            arguments(&d.node.arguments, out);
        }
    }
    fn arguments(args: &[(Positioned<Name>, Positioned<Literal>)], out: &mut HashSet<Pos>) {
        out.extend(args.iter().filter(|(_, v)| uses_variable(&v.node)).map(|(n, _)| n.pos));
    }
    fn set(s: &SelectionSet, out: &mut HashSet<Pos>) {
        for item in &s.items {
            match &item.node {
                Selection::Field(f) => {
                    arguments(&f.node.arguments, out);
                    directives(&f.node.directives, out);
                    set(&f.node.selection_set.node, out);
                }
                Selection::FragmentSpread(f) => directives(&f.node.directives, out),
                Selection::InlineFragment(i) => {
                    directives(&i.node.directives, out);
                    set(&i.node.selection_set.node, out);
                }
            }
        }
    }
    let mut out = HashSet::new();
    for (_, op) in doc.operations.iter() {
        directives(&op.node.directives, &mut out);
        set(&op.node.selection_set.node, &mut out);
    }
    for f in doc.fragments.values() {
        directives(&f.node.directives, &mut out);
        set(&f.node.selection_set.node, &mut out);
    }
    out
}
