//! Formatting of emitted files: `prettyplease`, then comments.
//!
//! `quote!` drops `//` comments, so the emitters write each comment line as a marker statement
//! or item, `__note!("text");`, and [`format_file`] turns every marker into a `// text` line
//! at the marker's indentation. `__verbatim!("code");` is replaced by the lines of `code`,
//! indented alike: hand-formatted helper macros, whose bodies `prettyplease` would print as a
//! run of tokens. The step comments of the forward pass and the `// SAFETY:`
//! notes before `unsafe` blocks are written this way. A marker that survives (one the
//! formatter printed in a shape this module does not know) fails generation instead of
//! reaching the compiler as an unknown macro.

use proc_macro2::TokenStream;

const MARKER: &str = "__note!(";
const VERBATIM: &str = "__verbatim!(";

/// `tokens` as a formatted Rust file with its `__note!` markers turned into comments, and a
/// blank line between items.
pub fn format_file(tokens: TokenStream) -> String {
    let syntax: syn::File = syn::parse2(tokens).expect("generated code parses");
    spaced(&comments(&prettyplease::unparse(&syntax)))
}

/// A blank line before each item (its docs, attributes or leading comments) that follows the
/// end of another, except between one-line constants and `use`s, which stay together.
fn spaced(code: &str) -> String {
    const ITEM: [&str; 12] = [
        "///",
        "#[",
        "// ",
        "pub ",
        "fn ",
        "const ",
        "struct ",
        "impl",
        "mod ",
        "unsafe fn ",
        "macro_rules!",
        "use ",
    ];
    // One-line constants stay together, and so do `use`s; the two groups are apart.
    let one_liner = |t: &str| match t.ends_with(';') {
        true if t.starts_with("use ") => Some("use"),
        true if t.starts_with("const ") || t.starts_with("pub const ") => Some("const"),
        _ => None,
    };
    let mut out = String::with_capacity(code.len() + code.len() / 20);
    let mut prev = "";
    for line in code.lines() {
        let t = line.trim_start();
        let p = prev.trim_start();
        let ended = p == "}" || p == "};" || (p.ends_with(';') && !p.starts_with("//"));
        let starts_item = ITEM.iter().any(|k| t.starts_with(k));
        let indent = line.len() - t.len();
        let prev_indent = prev.len() - p.len();
        if ended
            && starts_item
            && indent <= prev_indent
            && !(one_liner(t).is_some() && one_liner(t) == one_liner(p))
        {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
        prev = line;
    }
    out
}

/// Replace every marker (on one line, or split by the formatter over three:
/// `__note!(` / `"text"` / `);`) with a `// text` line.
fn comments(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let (marker, comment) = if trimmed.starts_with(MARKER) {
            (MARKER, true)
        } else if trimmed.starts_with(VERBATIM) {
            (VERBATIM, false)
        } else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let indent = &line[..line.len() - trimmed.len()];
        let literal = if trimmed == marker {
            let text = lines.next().expect("a split note has its text").trim();
            let end = lines.next().expect("a split note has its end").trim();
            assert_eq!(end, ");", "a note's end");
            text.to_string()
        } else {
            let inner = trimmed
                .strip_prefix(marker)
                .and_then(|rest| rest.strip_suffix(");"))
                .unwrap_or_else(|| panic!("a note on one line: {trimmed}"));
            inner.to_string()
        };
        let text: syn::LitStr = syn::parse_str(&literal).expect("a note is one string literal");
        let text = text.value();
        if !comment {
            for piece in text.lines() {
                if !piece.is_empty() {
                    out.push_str(indent);
                    out.push_str(piece);
                }
                out.push('\n');
            }
            continue;
        }
        if text.is_empty() {
            out.push_str(indent);
            out.push_str("//\n");
        }
        for piece in text.lines() {
            out.push_str(indent);
            out.push_str("// ");
            out.push_str(piece);
            out.push('\n');
        }
    }
    if let Some(at) = out.find(MARKER).or_else(|| out.find(VERBATIM)) {
        let context: String = out[at.saturating_sub(300)..].chars().take(600).collect();
        panic!("a __note! or __verbatim! marker was left in the generated code:\n{context}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn notes_become_comments_at_their_indentation() {
        let long = "a note long enough that the formatter moves it onto a line of its own, away from the marker";
        let code = format_file(quote! {
            __note!("Item note.");
            fn f() {
                __note!("SAFETY: nothing.");
                unsafe { g() }
                __note!(#long);
                let x = 1;
            }
        });
        assert_eq!(
            code,
            format!(
                "// Item note.\nfn f() {{\n    // SAFETY: nothing.\n    unsafe {{ g() }}\n    // {long}\n    let x = 1;\n}}\n"
            )
        );
    }

    #[test]
    fn items_are_separated_by_a_blank_line() {
        let code = format_file(quote! {
            const A: usize = 1;
            const B: usize = 2;
            /// Doc.
            fn f() {
                let x = 1;
                let y = x;
            }
            fn g() {}
        });
        assert_eq!(
            code,
            "const A: usize = 1;\nconst B: usize = 2;\n\n/// Doc.\nfn f() {\n    let x = 1;\n    let y = x;\n}\n\nfn g() {}\n"
        );
    }
}
