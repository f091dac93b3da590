//! Property tests of the os-release parser: any text parses without a panic, and values
//! written the way os-release(5) quotes them read back exactly.

use proptest::prelude::*;

use super::*;

/// os-release(5): double quotes, with `\`, `"`, `$` and `` ` `` escaped by a backslash.
fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

proptest! {
    #[test]
    fn any_text_parses(text in "(([A-Z_]{1,8}=[\"']?)?\\PC{0,12}\n?){0,10}") {
        let os = parse(&text);
        prop_assert_eq!(&os.id, &os.id.to_ascii_lowercase());
    }

    #[test]
    fn quoted_values_read_back(
        id in "[a-zA-Z0-9._-]{1,16}",
        like in prop::collection::vec("[a-z0-9._-]{1,10}", 0..4),
        pretty in "[^\n\r]{0,40}",
        comments in "(#\\PC{0,20}\n){0,3}",
        single in any::<bool>(),
    ) {
        let id_line = if single { format!("ID='{id}'") } else { format!("ID={id}") };
        let text = format!(
            "{comments}NAME=\"Some OS\"\n{id_line}\nID_LIKE={}\nPRETTY_NAME={}\n",
            quote(&like.join(" ")),
            quote(&pretty)
        );
        let os = parse(&text);
        prop_assert_eq!(os.id, id.to_ascii_lowercase());
        prop_assert_eq!(os.id_like, like);
        // NB: lines are trimmed, so a value's own outer spaces are not kept.
        prop_assert_eq!(os.pretty_name.trim(), pretty.trim());
    }
}
