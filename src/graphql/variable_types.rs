//! Variable types a document may declare: only input types the schema defines (its scalars,
//! enums and input objects, and GraphQL's built-in scalars). async-graphql's validation
//! panics ("Type `X` not defined", in `is_valid_input_value`) when a variable of an undefined
//! type has a list default value, `query($a: [[Ynt!]!] = [[1]]) { a }`, before its own rule
//! for unknown types reports it: found by the `graphql_prepare` fuzz target. The guardrails
//! refuse such a document first.

use std::collections::HashSet;

use async_graphql::Pos;
use async_graphql::parser::types::{BaseType, ExecutableDocument, Type, TypeKind, TypeSystemDefinition};

/// GraphQL's built-in scalars, which a schema's SDL does not print.
const BUILT_IN: [&str; 5] = ["Int", "Float", "String", "Boolean", "ID"];

/// The input types an SDL defines, with the built-in scalars.
pub fn input_types_in(sdl: &str) -> HashSet<String> {
    let mut names: HashSet<String> = BUILT_IN.iter().map(|s| s.to_string()).collect();
    if let Ok(doc) = async_graphql::parser::parse_schema(sdl) {
        for d in &doc.definitions {
            if let TypeSystemDefinition::Type(t) = d
                && matches!(t.node.kind, TypeKind::Scalar | TypeKind::Enum(_) | TypeKind::InputObject(_))
            {
                names.insert(t.node.name.node.to_string());
            }
        }
    }
    names
}

/// The first variable of `doc` whose type names no input type in `known`: the type's name
/// and where the variable stands.
pub fn first_unknown<'a>(doc: &'a ExecutableDocument, known: &HashSet<String>) -> Option<(&'a str, Pos)> {
    doc.operations.iter().flat_map(|(_, op)| op.node.variable_definitions.iter()).find_map(|v| {
        let name = named(&v.node.var_type.node);
        (!known.contains(name)).then_some((name, v.pos))
    })
}

/// The named type under a type's lists and non-null marks. Iterative: a list type nests as
/// deep as the document does.
fn named(t: &Type) -> &str {
    let mut t = t;
    loop {
        match &t.base {
            BaseType::Named(name) => return name.as_str(),
            BaseType::List(inner) => t = inner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_schemas_input_types_and_the_built_in_scalars_are_known() {
        let sdl = "scalar Decimal\nenum E { A }\ninput I { a: Int }\ntype Query { a(i: I): Int }";
        let known = input_types_in(sdl);
        for name in ["Int", "Float", "String", "Boolean", "ID", "Decimal", "E", "I"] {
            assert!(known.contains(name), "{name}");
        }
        assert!(!known.contains("Query"), "an output type is no variable type");
        let doc = |q: &str| async_graphql::parser::parse_query(q).unwrap();
        assert!(first_unknown(&doc("query($a: [[I!]!], $b: Decimal, $c: E) { a }"), &known).is_none());
        let d = doc("query($a: Int, $b: [[Ynt!]!] = [[1]]) { a }");
        assert_eq!(first_unknown(&d, &known).map(|(n, _)| n), Some("Ynt"));
        let d = doc("query($q: Query) { a }");
        assert_eq!(first_unknown(&d, &known).map(|(n, _)| n), Some("Query"));
    }
}
