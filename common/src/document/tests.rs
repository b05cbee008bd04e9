use serde_json::json;

use super::*;

#[track_caller]
fn ok(text: &str) -> Value {
    load_document(text).unwrap_or_else(|error| panic!("{error}"))
}

#[track_caller]
fn fails(text: &str) -> String {
    match load_document(text) {
        Ok(value) => panic!("loaded {value}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn plain_scalars_resolve_by_the_core_schema() {
    let value = ok(concat!(
        "nulls: [~, null, Null, NULL]\n",
        "empty:\n",
        "bools: [true, False, TRUE, yes, no, on]\n",
        "ints: [0, -12, +7, 0o17, 0x1f, 18446744073709551615, 99999999999999999999]\n",
        "floats: [1.5, -.5, 1e3, 2.5E-1, 1.]\n",
        "strings: [1s, 512Mi, 1_000, 0x, 1.2.3, 'true', \"12\", !!str 13]\n",
        "forced: [!!int 42, !!float 1, !!bool true, !!null null, ! 5]\n",
        "block: |\n  line [\n",
    ));
    assert_eq!(value["nulls"], json!([null, null, null, null]));
    assert_eq!(value["empty"], Value::Null);
    assert_eq!(value["bools"], json!([true, false, true, "yes", "no", "on"]));
    assert_eq!(value["ints"], json!([0, -12, 7, 15, 31, 18446744073709551615u64, 1e20]));
    assert_eq!(value["floats"], json!([1.5, -0.5, 1000.0, 0.25, 1.0]));
    assert_eq!(
        value["strings"],
        json!(["1s", "512Mi", "1_000", "0x", "1.2.3", "true", "12", "13"])
    );
    assert_eq!(value["forced"], json!([42, 1, true, null, "5"]));
    assert_eq!(value["block"], "line [\n");
}

#[test]
fn json_and_yaml_load_to_the_same_value() {
    let yaml = ok("name: w\ntasks:\n  - {id: a, deps: [], args: {n: 3, f: 0.5}}\n");
    let json = ok(r#"{"name": "w", "tasks": [{"id": "a", "deps": [], "args": {"n": 3, "f": 0.5}}]}"#);
    assert_eq!(yaml, json);
    // A byte-order mark in front changes nothing.
    assert_eq!(
        ok("\u{feff}name: w\ntasks:\n  - {id: a, deps: [], args: {n: 3, f: 0.5}}\n"),
        yaml
    );
    assert_eq!(ok("\u{feff}  {\"a\": 1}"), json!({"a": 1}));
}

#[test]
fn anchors_and_aliases_expand() {
    let value = ok("base: &env {A: '1'}\nuse: [*env, *env]\n");
    assert_eq!(value["use"], json!([{"A": "1"}, {"A": "1"}]));
    assert!(fails("x: *nowhere\n").contains("unknown anchor"));
}

#[test]
fn keys_given_twice_are_refused_with_their_place() {
    assert_eq!(
        fails("name: a\ntasks: []\nname: b\n"),
        "invalid YAML at line 3 column 1: key `name` is given twice"
    );
    assert_eq!(
        fails("{\"a\": 1,\n \"a\": 2}"),
        "invalid JSON at line 2 column 4: key `a` is given twice"
    );
    // Keys that are not strings are compared as text.
    assert!(fails("1: a\n'1': b\n").contains("key `1` is given twice"));
    assert!(fails("? [a]\n: b\n").contains("a key must be text"));
}

#[test]
fn what_json_cannot_hold_is_named() {
    let error = fails("timeout: .nan\n");
    assert!(
        error.starts_with("invalid YAML at line 1 column 10: `.nan` is not a finite number"),
        "{error}"
    );
    assert!(fails("x: -.inf\n").contains("`-.inf` is not a finite number"));
    assert!(fails("x: !custom 3\n").contains("tag `!custom` is not supported"));
    assert!(fails("x: !!int abc\n").contains("`abc` is not a valid `!!int`"));
    assert!(fails("x: !!map [1]\n").contains("tag `!!map` is not supported here"));
}

#[test]
fn one_document_per_file() {
    assert!(fails("").contains("the document is empty"));
    assert!(fails("# only a comment\n").contains("the document is empty"));
    let error = fails("a: 1\n---\nb: 2\n");
    assert!(
        error.contains("line 2") && error.contains("a second document"),
        "{error}"
    );
    assert_eq!(ok("---\na: 1\n...\n"), json!({"a": 1}));
    assert!(fails("{\"a\": 1} {\"b\": 2}").contains("trailing characters"));
}

#[test]
fn nesting_is_bounded_in_both_formats() {
    let deep = |n: usize| format!("x: {}{}", "[".repeat(n), "]".repeat(n));
    assert!(load_document(&deep(MAX_DEPTH - 1)).is_ok());
    assert!(fails(&deep(MAX_DEPTH)).contains("nested more than 64 levels deep"));
    let deep_json = |n: usize| format!("{{\"x\": {}{}}}", "[".repeat(n), "]".repeat(n));
    assert!(load_document(&deep_json(MAX_DEPTH - 1)).is_ok());
    assert!(fails(&deep_json(MAX_DEPTH)).contains("nested more than 64 levels deep"));
    let mut block = String::from("x:\n");
    for level in 0..=MAX_DEPTH {
        block.push_str(&" ".repeat(2 * level + 2));
        block.push_str("y:\n");
    }
    assert!(fails(&block).contains("nested more than 64 levels deep"));
}

#[test]
fn hostile_nesting_is_refused_quickly() {
    // 100,000 levels of flow collections cost a YAML parser time for every level at every
    // token; the loader stops at the bound instead of after the whole text.
    let n = 100_000;
    let text = format!("x: {}{}", "{a: [".repeat(n), "]}".repeat(n));
    let started = std::time::Instant::now();
    assert!(fails(&text).contains("nested more than 64 levels deep"));
    let json = format!("{{\"x\": {}{}}}", "{\"a\": [".repeat(n), "]}".repeat(n));
    assert!(fails(&json).contains("nested more than 64 levels deep"));
    // Generous for a debug build on a loaded machine: the quadratic cost was a minute.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn aliases_cannot_expand_past_the_budget() {
    let big = "a".repeat(1 << 20);
    let aliases = vec!["*big"; 3000].join(", ");
    let text = format!("s: &big \"{big}\"\nl: [{aliases}]\n");
    let error = fails(&text);
    assert!(
        error.contains("aliases expand the document by more than 16777216 bytes"),
        "{error}"
    );
    // Within the budget, aliases are fine.
    let text = format!("s: &big \"{big}\"\nl: [*big, *big, *big]\n");
    assert_eq!(ok(&text)["l"].as_array().map(Vec::len), Some(3));
    assert_eq!(alias_budget(100 << 20), 200 << 20);
}

#[test]
fn yaml_syntax_errors_say_where() {
    let error = fails("a: [1, 2\nb: 3\n");
    assert!(error.starts_with("invalid YAML at line"), "{error}");
    let error = fails("{\"a\": }");
    assert!(
        error.starts_with("invalid JSON at line 1 column 7: expected value"),
        "{error}"
    );
}
