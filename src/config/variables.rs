//! The environment variables a pipeline's secret references need, found in its text, so
//! `rollcall init` and `rollcall validate` can name all of them at once instead of one per try.

/// Every `${NAME}` the text refers to without a default (`${NAME:-x}` and `${file:…}` need
/// nothing exported), in order of first use, each once. Comments are skipped.
pub fn required(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in text.lines() {
        let code = match line.find(" #") {
            Some(i) => &line[..i],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        let mut rest = code;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            let inner = &after[..end];
            let valid =
                !inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if valid && !names.iter().any(|n| n == inner) {
                names.push(inner.to_owned());
            }
            rest = &after[end + 1..];
        }
    }
    names
}

/// The required variables not set in this process's environment.
pub fn unset(text: &str) -> Vec<String> {
    required(text)
        .into_iter()
        .filter(|n| std::env::var_os(n).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_reference_once_and_skips_defaults_files_and_comments() {
        let text = "a: ${ONE}\nb: ${TWO:-x}\nc: ${file:/run/s}\n# d: ${THREE}\ne: x # ${FOUR}\nf: ${ONE} ${FIVE}\ng: ${bad name}\nh: ${UNCLOSED\n";
        assert_eq!(required(text), ["ONE", "FIVE"]);
        assert!(required("").is_empty());
    }
}
