//! Kubernetes' `$(VAR)` expansion, as the kubelet applies it to env values, commands and args
//! (`k8s.io/kubernetes/third_party/forked/golang/expansion`), and the command line of a container
//! for providers that cannot expand at run time: plain variables expanded, Secret-derived ones
//! refused (a command line is not a secret field). Pure.

use k8s_openapi::api::core::v1::Container;

use crate::provider::contract::{EnvValue, EnvVar};
use crate::provider::kit::{TranslateError, unsupported};

/// `input` with every `$(VAR)` that `lookup` knows replaced by its value; an unknown reference
/// stays as written, `$$` is an escaped `$`, as on a kubelet.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 >= bytes.len() {
            i += 1;
            continue;
        }
        out.push_str(&input[copied..i]);
        match bytes[i + 1] {
            b'$' => {
                out.push('$');
                i += 2;
            }
            b'(' => match input[i + 2..].find(')') {
                Some(len) => {
                    let name = &input[i + 2..i + 2 + len];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&input[i..i + 3 + len]),
                    }
                    i += 3 + len;
                }
                // No closing parenthesis: the rest is literal.
                None => {
                    out.push_str(&input[i..]);
                    i = bytes.len();
                }
            },
            // A `$` before anything else is kept, with the character after it.
            _ => {
                out.push_str(&input[i..i + 2]);
                i += 2;
            }
        }
        copied = i;
    }
    if copied < input.len() {
        out.push_str(&input[copied..]);
    }
    out
}

/// The names `input` references as `$(VAR)` (escaped `$$(` excluded), in order.
pub fn references(input: &str) -> Vec<String> {
    let names = std::cell::RefCell::new(Vec::new());
    expand(input, |name| {
        names.borrow_mut().push(name.to_string());
        None
    });
    names.into_inner()
}

/// `c`'s command and args with `env`'s plain variables expanded; a reference to a Secret-derived
/// variable is refused (`provider` words the reason), since the provider would show the value in
/// the workload's plain command.
pub fn command_and_args(
    field: &str,
    c: &Container,
    env: &[EnvVar],
    provider: &str,
) -> Result<(Vec<String>, Vec<String>), TranslateError> {
    let expand_all = |which: &str, list: &Option<Vec<String>>| {
        list.iter()
            .flatten()
            .map(|s| expand_plain(&format!("{field}.{which}"), s, env, provider))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok((
        expand_all("command", &c.command)?,
        expand_all("args", &c.args)?,
    ))
}

/// `s` with `env`'s plain variables expanded (the last definition of a name wins).
fn expand_plain(
    field: &str,
    s: &str,
    env: &[EnvVar],
    provider: &str,
) -> Result<String, TranslateError> {
    if let Some(name) = references(s).into_iter().find(|name| {
        matches!(
            env.iter().rev().find(|v| &v.name == name).map(|v| &v.value),
            Some(EnvValue::Secret(_))
        )
    }) {
        return Err(unsupported(
            field.to_string(),
            format!(
                "$({name}) refers to a Secret-derived variable; {provider} command lines are not secret, read the variable at run time instead"
            ),
        ));
    }
    Ok(expand(s, |name| {
        match env.iter().rev().find(|v| v.name == name).map(|v| &v.value) {
            Some(EnvValue::Plain(v)) => Some(v.clone()),
            _ => None,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::contract::SecretString;

    fn lookup_in(env: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| {
            env.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn known_references_expand_unknown_ones_stay_and_dollar_dollar_escapes() {
        let env = vec![
            ("HOST".to_string(), "db".to_string()),
            ("PORT".to_string(), "5432".to_string()),
        ];
        let lookup = lookup_in(&env);
        assert_eq!(
            expand("postgres://$(HOST):$(PORT)/app", &lookup),
            "postgres://db:5432/app"
        );
        assert_eq!(expand("$(MISSING) stays", &lookup), "$(MISSING) stays");
        assert_eq!(expand("$$(HOST) is escaped", &lookup), "$(HOST) is escaped");
        assert_eq!(expand("cost $5 and $(HOST", &lookup), "cost $5 and $(HOST");
        assert_eq!(expand("ends with $", &lookup), "ends with $");
    }

    #[test]
    fn references_lists_the_names_an_input_uses() {
        assert_eq!(
            references("--url=$(HOST):$(PORT) $$(NOT)"),
            ["HOST", "PORT"]
        );
    }

    #[test]
    fn a_command_line_expands_plain_variables_and_refuses_secret_ones() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "app", "command": ["run", "--mode=$(MODE)"], "args": ["--token=$(TOKEN)"]
        }))
        .unwrap();
        let env = vec![
            EnvVar {
                name: "MODE".into(),
                value: EnvValue::Plain("fast".into()),
            },
            EnvVar {
                name: "TOKEN".into(),
                value: EnvValue::Secret(SecretString::from("s3cret")),
            },
        ];
        let err = command_and_args("spec.containers[app]", &c, &env, "Fargate").unwrap_err();
        assert!(
            matches!(&err, TranslateError::Unsupported { field, reason } if field == "spec.containers[app].args" && reason.contains("$(TOKEN)") && !reason.contains("s3cret")),
            "{err:?}"
        );
        let plain = &env[..1];
        let (command, args) =
            command_and_args("spec.containers[app]", &c, plain, "Fargate").unwrap();
        assert_eq!(command, ["run", "--mode=fast"]);
        assert_eq!(args, ["--token=$(TOKEN)"]);
    }
}
