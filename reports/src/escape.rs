//! Escaping user strings for HTML and XML.

/// Escapes `&`, `<`, `>`, `"` and `'` so that the string is safe as HTML or XML
/// text and inside a quoted attribute.
///
/// # Example
/// ```
/// assert_eq!(
///     fuselab_reports::escape_html("<script>alert('x & y')</script>"),
///     "&lt;script&gt;alert(&#39;x &amp; y&#39;)&lt;/script&gt;"
/// );
/// ```
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab/newline are not allowed in XML 1.0.
            c if c.is_control() && c != '\n' && c != '\t' && c != '\r' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(escape_html("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
        assert_eq!(escape_html("plain"), "plain");
        assert_eq!(escape_html("bell\u{7}"), "bell\u{fffd}");
    }
}
