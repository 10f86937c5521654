//! Directives a document may use: only those the schema defines. async-graphql's validation
//! reports an unknown directive on most selections, but never looks at the directives of a
//! `__typename` field or of a variable definition, so `{ __typename @foo }` ran. The
//! guardrails check every place a directive can stand, before validation.

use std::collections::HashSet;

use async_graphql::Pos;
use async_graphql::parser::Positioned;
use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet, TypeSystemDefinition};

/// The names of the directives an SDL defines (`@include`, `@skip`, …).
pub fn defined_in(sdl: &str) -> HashSet<String> {
    let Ok(doc) = async_graphql::parser::parse_schema(sdl) else {
        return HashSet::new();
    };
    doc.definitions
        .iter()
        .filter_map(|d| match d {
            TypeSystemDefinition::Directive(d) => Some(d.node.name.node.to_string()),
            _ => None,
        })
        .collect()
}

/// The first directive of `doc` that `known` does not name, and where it stands: on an
/// operation, a variable definition, a fragment definition, a field, a fragment spread or an
/// inline fragment.
pub fn first_unknown<'a>(doc: &'a ExecutableDocument, known: &HashSet<String>) -> Option<(&'a str, Pos)> {
    for (_, op) in doc.operations.iter() {
        let op = &op.node;
        let found = unknown_in(&op.directives, known)
            .or_else(|| op.variable_definitions.iter().find_map(|v| unknown_in(&v.node.directives, known)))
            .or_else(|| in_set(&op.selection_set.node, known));
        if found.is_some() {
            return found;
        }
    }
    doc.fragments
        .values()
        .find_map(|f| unknown_in(&f.node.directives, known).or_else(|| in_set(&f.node.selection_set.node, known)))
}

fn unknown_in<'a>(directives: &'a [Positioned<Directive>], known: &HashSet<String>) -> Option<(&'a str, Pos)> {
    directives.iter().find(|d| !known.contains(d.node.name.node.as_str())).map(|d| (d.node.name.node.as_str(), d.pos))
}

/// Selection sets nest no deeper than the parser allows (64), so the recursion is bounded.
fn in_set<'a>(set: &'a SelectionSet, known: &HashSet<String>) -> Option<(&'a str, Pos)> {
    set.items.iter().find_map(|item| match &item.node {
        Selection::Field(f) => {
            unknown_in(&f.node.directives, known).or_else(|| in_set(&f.node.selection_set.node, known))
        }
        Selection::FragmentSpread(s) => unknown_in(&s.node.directives, known),
        Selection::InlineFragment(i) => {
            unknown_in(&i.node.directives, known).or_else(|| in_set(&i.node.selection_set.node, known))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> HashSet<String> {
        defined_in(&crate::graphql::sdl())
    }

    #[test]
    fn the_schemas_directives_are_read_from_its_sdl() {
        let k = known();
        assert!(k.contains("include") && k.contains("skip"), "{k:?}");
        assert!(!k.contains("foo"));
    }

    #[test]
    fn an_unknown_directive_is_found_wherever_it_stands() {
        let k = known();
        for q in [
            "{ __typename @foo }",
            "query Q @foo { __typename }",
            "query Q($a: Boolean @foo) { __typename @include(if: $a) }",
            "{ ...F @foo } fragment F on Query { __typename }",
            "{ ...F } fragment F on Query @foo { __typename }",
            "{ ... @foo { __typename } }",
            "{ ... on Query { getPlaidBankAccounts { bankAccountId @foo } } }",
            "{ __typename @include(if: true) @foo(x: 1) }",
        ] {
            let doc = async_graphql::parser::parse_query(q).unwrap();
            assert_eq!(first_unknown(&doc, &k).map(|(n, _)| n), Some("foo"), "{q}");
        }
        let fine = "query Q($a: Boolean!) { a: __typename @include(if: $a) ...F @skip(if: $a) }
            fragment F on Query { ... @include(if: true) { __typename } }";
        assert_eq!(first_unknown(&async_graphql::parser::parse_query(fine).unwrap(), &k), None);
    }
}
