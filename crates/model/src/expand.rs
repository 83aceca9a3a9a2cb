//! Kubernetes' `$(VAR)` references in a container's `command`, `args` and `env` values.

/// Expands `$(NAME)` from `lookup` with Kubernetes' rules: `$$` is a literal `$` (so
/// `$$(NAME)` stays `$(NAME)`), a name `lookup` does not know stays as written, and a
/// `$` not followed by `(` or `$` is kept.
pub fn expand_references<'a>(text: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match lookup(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Expands each variable's value from the variables before it (Kubernetes' dependent
/// environment variables), in order; later definitions of a name replace earlier ones.
pub fn expand_environment(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut expanded: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (name, value) in env {
        let value = expand_references(value, |n| expanded.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.as_str()));
        expanded.push((name.clone(), value));
    }
    expanded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str) -> Option<&'static str> {
        (name == "PORT").then_some("8080")
    }

    #[test]
    fn references_expand_with_kubernetes_rules() {
        assert_eq!(expand_references("127.0.0.1:$(PORT)", port), "127.0.0.1:8080");
        assert_eq!(expand_references("$$(PORT)", port), "$(PORT)");
        assert_eq!(expand_references("$(NOPE) and $(PORT)", port), "$(NOPE) and 8080");
        assert_eq!(expand_references("$PORT ${PORT} $", port), "$PORT ${PORT} $");
        assert_eq!(expand_references("$$$(PORT)", port), "$8080");
        assert_eq!(expand_references("$(PORT", port), "$(PORT");
        assert_eq!(expand_references("€$(PORT)€", port), "€8080€");
    }

    #[test]
    fn environment_values_see_the_variables_before_them() {
        let env = [("PORT", "1"), ("A", "x$(PORT)"), ("B", "$(A)-$(C)"), ("C", "c")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let got = expand_environment(&env);
        assert_eq!(got[1].1, "x1");
        assert_eq!(got[2].1, "x1-$(C)");
    }
}
