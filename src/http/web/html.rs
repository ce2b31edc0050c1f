//! Owns the HTML shell of the web pages: escaping, the page layout with navigation, and
//! form fields that show their error next to them and keep what the user typed.

use std::fmt::Write;

pub use crate::domain::text::escape;

/// Who the navigation is for.
pub struct Nav<'a> {
    pub username: Option<&'a str>,
    pub admin: bool,
    pub csrf: &'a str,
}

impl<'a> Nav<'a> {
    pub fn anonymous(csrf: &'a str) -> Nav<'a> {
        Nav {
            username: None,
            admin: false,
            csrf,
        }
    }

    pub fn signed_in(user: &'a crate::storage::users::User, csrf: &'a str) -> Nav<'a> {
        Nav {
            username: Some(&user.username),
            admin: user.role == crate::domain::user::Role::Admin,
            csrf,
        }
    }
}

pub fn page(title: &str, nav: &Nav<'_>, body: &str) -> String {
    let links = match nav.username {
        Some(name) => format!(
            r#"<a href="/alerts">My alerts</a> <a href="/board/main">Board</a> <a href="/mesh">Mesh</a>{sla} <a href="/account">{}</a>
<form class="inline" method="post" action="/logout"><input type="hidden" name="csrf" value="{}"><button class="link" type="submit">Log out</button></form>"#,
            escape(name),
            escape(nav.csrf),
            sla = if nav.admin {
                r#" <a href="/sla">SLA</a>"#
            } else {
                ""
            },
        ),
        None => r#"<a href="/login">Log in</a> <a href="/register">Register</a>"#.to_owned(),
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · meteomesh</title>
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css">
</head>
<body>
<header><nav aria-label="Main"><a class="brand" href="/">meteomesh</a>{links}</nav></header>
<main>
{body}
</main>
</body>
</html>
"#,
        title = escape(title),
    )
}

/// One labelled input with its error (if any) and the value to show again.
pub struct Field<'a> {
    pub name: &'a str,
    pub label: &'a str,
    pub kind: &'a str,
    pub value: &'a str,
    pub error: Option<&'a str>,
    pub hint: Option<&'a str>,
    pub autocomplete: &'a str,
    pub required: bool,
}

impl<'a> Field<'a> {
    /// An optional text input with no hint and no error.
    pub fn text(name: &'a str, label: &'a str, value: &'a str) -> Field<'a> {
        Field {
            name,
            label,
            kind: "text",
            value,
            error: None,
            hint: None,
            autocomplete: "off",
            required: false,
        }
    }

    /// A password input (its value is never rendered).
    pub fn password(name: &'a str, label: &'a str, autocomplete: &'a str) -> Field<'a> {
        Field {
            kind: "password",
            autocomplete,
            required: true,
            ..Field::text(name, label, "")
        }
    }

    pub fn error(self, error: Option<&'a str>) -> Field<'a> {
        Field { error, ..self }
    }

    pub fn hint(self, hint: &'a str) -> Field<'a> {
        Field {
            hint: Some(hint),
            ..self
        }
    }

    pub fn autocomplete(self, autocomplete: &'a str) -> Field<'a> {
        Field {
            autocomplete,
            ..self
        }
    }

    pub fn required(self) -> Field<'a> {
        Field {
            required: true,
            ..self
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let id = format!("f-{}", self.name);
        let _ = write!(out, r#"<label for="{id}">{}</label>"#, escape(self.label));
        let mut described = Vec::new();
        if self.hint.is_some() {
            described.push(format!("{id}-hint"));
        }
        if self.error.is_some() {
            described.push(format!("{id}-error"));
        }
        let _ = write!(
            out,
            r#"<input id="{id}" name="{name}" type="{kind}" value="{value}" autocomplete="{ac}"{req}{invalid}{desc}>"#,
            name = escape(self.name),
            kind = self.kind,
            // Passwords are never sent back to the browser.
            value = if self.kind == "password" {
                String::new()
            } else {
                escape(self.value)
            },
            ac = self.autocomplete,
            req = if self.required { " required" } else { "" },
            invalid = if self.error.is_some() {
                r#" aria-invalid="true""#
            } else {
                ""
            },
            desc = if described.is_empty() {
                String::new()
            } else {
                format!(r#" aria-describedby="{}""#, described.join(" "))
            },
        );
        if let Some(hint) = self.hint {
            let _ = write!(
                out,
                r#"<p class="hint" id="{id}-hint">{}</p>"#,
                escape(hint)
            );
        }
        if let Some(error) = self.error {
            let _ = write!(
                out,
                r#"<p class="field-error" id="{id}-error">{}</p>"#,
                escape(error)
            );
        }
        out
    }
}

pub fn alert(kind: &str, message: &str) -> String {
    format!(
        r#"<div class="alert {kind}" role="{role}">{}</div>"#,
        escape(message),
        role = if kind == "error" { "alert" } else { "status" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<b a="1">&'x'"#),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;x&#39;"
        );
    }

    #[test]
    fn field_keeps_value_but_never_a_password() {
        let mut f = Field {
            name: "username",
            label: "Username",
            kind: "text",
            value: "<bob>",
            error: Some("taken"),
            hint: None,
            autocomplete: "username",
            required: true,
        };
        let html = f.render();
        assert!(html.contains(r#"value="&lt;bob&gt;""#));
        assert!(html.contains(r#"aria-invalid="true""#));
        assert!(html.contains("taken"));
        f.kind = "password";
        f.value = "secret";
        assert!(!f.render().contains("secret"));
    }
}
