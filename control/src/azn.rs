//! Authorisation: peer identities → roles → capabilities, from `[Roles]` and
//! `[Authorizations]` (reference `mplane/azn.py`, digest §8).
//!
//! ```text
//!  Identity ──[Roles]──► {roles}            capability label ──[Authorizations] key──► {roles}
//!                              └──────── intersect non-empty? ────────┘ → allowed
//! ```
//!
//! * **Off** without `[TLS]`: everyone is `Identity.Unauthenticated.Default` and everything is
//!   allowed (as the reference).
//! * **On** with `[TLS]`: deny by default. An identity is looked up byte-exactly in `[Roles]`.
//!   The capability's rule is chosen by [`AznMode`]:
//!   * [`AznMode::Substring`] (the reference): every `[Authorizations]` key that is a
//!     substring of the capability **label** matches, and the **last** matching key in file
//!     order wins (so `ping` also covers `ping-average-ip4`, and a later `ping` overrides an
//!     earlier `ping-average`). The reference never looks at tokens; neither does this mode.
//!     A capability without label matches nothing.
//!   * [`AznMode::Exact`] (ours): a key must equal the label or the token.
//! * Role lists are split on `,`. Deviation: each role is **trimmed** and empty roles are
//!   dropped; the reference keeps `" admin"` (which then never matches `admin`) and `""`
//!   (which matches another empty role). Both cases produce an [`AznWarning`], so a config
//!   that behaves differently under the reference is reported. Reference-style configs
//!   (`guest,admin`) behave identically.
//! * [`Azn::lint`] reports keys matching several capability labels, labels matched by
//!   several keys, and keys matching none, given the labels the component offers.
//!
//! Plain sync code, no I/O: [`Azn::decide`] is a pure function of the rules.
//!
//! ```
//! use mplane::azn::{Azn, AznMode};
//! use mplane::config::Config;
//! use mplane::tls::Identity;
//! let config = Config::parse(
//!     "[TLS]\ncert = c.crt\nkey = c.key\nca-chain = ca.crt\n\
//!      [Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\
//!      [Authorizations]\nping-average = guest,admin\n",
//!     "comp.conf",
//! )?;
//! let azn = Azn::from_config(&config, AznMode::Substring)?;
//! let client = Identity::from("org.mplane.SSB.Clients.Client-1");
//! assert!(azn.check(&client, Some("ping-average-ip4"), None));
//! assert!(!azn.check(&client, Some("ping-detail-ip4"), None)); // deny by default
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::{Config, Setting};
use crate::tls::Identity;

/// How `[Authorizations]` keys select capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AznMode {
    /// A key matches if it is a substring of the label; the last matching key wins
    /// (the reference behaviour).
    #[default]
    Substring,
    /// A key matches if it equals the label or the token.
    Exact,
}

/// Why authorisation rules could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AznError {
    /// `[TLS]` is present but `[Roles]` or `[Authorizations]` is not (the reference fails
    /// with `KeyError`; an empty section denies everything).
    #[error(
        "{file}: missing section [{section}] (required with [TLS]; an empty section denies everything)"
    )]
    MissingSection {
        /// The configuration file.
        file: String,
        /// `Roles` or `Authorizations`.
        section: &'static str,
    },
}

/// Something in the rules that is probably a mistake, or that the reference would treat
/// differently.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AznWarning {
    /// A role had surrounding whitespace (trimmed here; the reference keeps it).
    RoleWhitespace {
        /// `Roles` or `Authorizations`.
        section: &'static str,
        /// The key.
        key: String,
        /// The role as written.
        role: String,
        /// Line of the key.
        line: usize,
    },
    /// An empty role (`a,,b` or a trailing comma; dropped here).
    EmptyRole {
        /// `Roles` or `Authorizations`.
        section: &'static str,
        /// The key.
        key: String,
        /// Line of the key.
        line: usize,
    },
    /// One `[Authorizations]` key is a substring of several capability labels.
    KeyMatchesSeveral {
        /// The key.
        key: String,
        /// The labels it matches.
        labels: Vec<String>,
    },
    /// Several keys match one label; the last one in file order decides.
    LabelMatchedBySeveral {
        /// The capability label.
        label: String,
        /// The matching keys in file order (the last one wins).
        keys: Vec<String>,
    },
    /// A key matches no offered capability.
    KeyMatchesNothing {
        /// The key.
        key: String,
    },
}

impl fmt::Display for AznWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AznWarning::RoleWhitespace {
                section,
                key,
                role,
                line,
            } => write!(
                f,
                "[{section}] {key} (line {line}): role {role:?} has surrounding whitespace; \
                 trimmed here, but the reference SDK would not match it"
            ),
            AznWarning::EmptyRole { section, key, line } => write!(
                f,
                "[{section}] {key} (line {line}): empty role ignored (the reference would keep it)"
            ),
            AznWarning::KeyMatchesSeveral { key, labels } => write!(
                f,
                "[Authorizations] {key} is a substring of several capability labels: {}",
                labels.join(", ")
            ),
            AznWarning::LabelMatchedBySeveral { label, keys } => write!(
                f,
                "capability {label:?} is matched by [Authorizations] keys {}; the last one wins",
                keys.join(", ")
            ),
            AznWarning::KeyMatchesNothing { key } => {
                write!(f, "[Authorizations] {key} matches no capability")
            }
        }
    }
}

/// The outcome of [`Azn::decide`], with the reason (for logs and exceptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Authorisation is off (no `[TLS]`): allowed.
    Unrestricted,
    /// Allowed by `[Authorizations] key` through `role`.
    Allowed {
        /// The `[Authorizations]` key that decided.
        key: String,
        /// A common role (the first in sort order).
        role: String,
    },
    /// The identity is not in `[Roles]`.
    UnknownIdentity,
    /// No `[Authorizations]` key matches the capability.
    NoRule,
    /// The deciding key's roles and the identity's roles are disjoint.
    NoCommonRole {
        /// The `[Authorizations]` key that decided.
        key: String,
    },
}

impl Decision {
    /// Whether the capability may be used.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Unrestricted | Decision::Allowed { .. })
    }
}

/// One `[Authorizations]` rule, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    key: String,
    roles: BTreeSet<String>,
}

/// Authorisation rules; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Azn {
    inner: Option<Rules>,
    warnings: Vec<AznWarning>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rules {
    mode: AznMode,
    identities: BTreeMap<String, BTreeSet<String>>,
    rules: Vec<Rule>,
}

fn split_roles(
    section: &'static str,
    setting: &Setting,
    warnings: &mut Vec<AznWarning>,
) -> BTreeSet<String> {
    let mut roles = BTreeSet::new();
    for role in setting.value.split(',') {
        let trimmed = role.trim();
        if trimmed.is_empty() {
            warnings.push(AznWarning::EmptyRole {
                section,
                key: setting.key.clone(),
                line: setting.line,
            });
            continue;
        }
        if trimmed.len() != role.len() {
            warnings.push(AznWarning::RoleWhitespace {
                section,
                key: setting.key.clone(),
                role: role.to_owned(),
                line: setting.line,
            });
        }
        roles.insert(trimmed.to_owned());
    }
    roles
}

impl Azn {
    /// Authorisation off: everything allowed.
    pub fn off() -> Azn {
        Azn {
            inner: None,
            warnings: Vec::new(),
        }
    }

    /// From the `[Roles]` and `[Authorizations]` settings (in file order).
    pub fn from_settings(roles: &[Setting], authorizations: &[Setting], mode: AznMode) -> Azn {
        let mut warnings = Vec::new();
        let identities = roles
            .iter()
            .map(|s| (s.key.clone(), split_roles("Roles", s, &mut warnings)))
            .collect();
        let rules = authorizations
            .iter()
            .map(|s| Rule {
                key: s.key.clone(),
                roles: split_roles("Authorizations", s, &mut warnings),
            })
            .collect();
        Azn {
            inner: Some(Rules {
                mode,
                identities,
                rules,
            }),
            warnings,
        }
    }

    /// From a configuration: off without `[TLS]`, else the rules of `[Roles]` and
    /// `[Authorizations]` (both required). Warnings are logged with `tracing::warn!` and
    /// kept in [`Azn::warnings`].
    pub fn from_config(config: &Config, mode: AznMode) -> Result<Azn, AznError> {
        if config.tls.is_none() {
            return Ok(Azn::off());
        }
        let missing = |section| AznError::MissingSection {
            file: config.source().to_owned(),
            section,
        };
        let roles = config.roles.as_deref().ok_or_else(|| missing("Roles"))?;
        let authorizations = config
            .authorizations
            .as_deref()
            .ok_or_else(|| missing("Authorizations"))?;
        let azn = Azn::from_settings(roles, authorizations, mode);
        for w in &azn.warnings {
            tracing::warn!(file = config.source(), "{w}");
        }
        Ok(azn)
    }

    /// Whether authorisation is on (a `[TLS]` section exists).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The matching mode (`None` when off).
    pub fn mode(&self) -> Option<AznMode> {
        self.inner.as_ref().map(|r| r.mode)
    }

    /// Warnings found while reading the rules.
    pub fn warnings(&self) -> &[AznWarning] {
        &self.warnings
    }

    /// The roles of an identity (`None` if it is not in `[Roles]` or azn is off).
    pub fn roles_of(&self, identity: &Identity) -> Option<&BTreeSet<String>> {
        self.inner.as_ref()?.identities.get(identity.as_str())
    }

    /// The `[Authorizations]` rule deciding for a capability, per the mode.
    fn rule_for<'a>(
        rules: &'a Rules,
        label: Option<&str>,
        token: Option<&str>,
    ) -> Option<&'a Rule> {
        match rules.mode {
            AznMode::Substring => {
                let label = label?;
                rules
                    .rules
                    .iter()
                    .rev()
                    .find(|r| label.contains(r.key.as_str()))
            }
            AznMode::Exact => rules
                .rules
                .iter()
                .rev()
                .find(|r| Some(r.key.as_str()) == label || Some(r.key.as_str()) == token),
        }
    }

    /// Decides whether `identity` may use the capability with this label and token.
    pub fn decide(
        &self,
        identity: &Identity,
        label: Option<&str>,
        token: Option<&str>,
    ) -> Decision {
        let Some(rules) = &self.inner else {
            return Decision::Unrestricted;
        };
        let Some(rule) = Azn::rule_for(rules, label, token) else {
            return Decision::NoRule;
        };
        let Some(roles) = rules.identities.get(identity.as_str()) else {
            return Decision::UnknownIdentity;
        };
        match rule.roles.intersection(roles).next() {
            Some(role) => Decision::Allowed {
                key: rule.key.clone(),
                role: role.clone(),
            },
            None => Decision::NoCommonRole {
                key: rule.key.clone(),
            },
        }
    }

    /// `decide(..).is_allowed()`; the reference's `check(cap, identity)`.
    pub fn check(&self, identity: &Identity, label: Option<&str>, token: Option<&str>) -> bool {
        self.decide(identity, label, token).is_allowed()
    }

    /// Checks the rules against the capability labels a component offers (call once after
    /// registering services). Substring mode only; the caller reports the warnings.
    pub fn lint<'a>(&self, labels: impl IntoIterator<Item = &'a str>) -> Vec<AznWarning> {
        let Some(rules) = &self.inner else {
            return Vec::new();
        };
        if rules.mode != AznMode::Substring {
            return Vec::new();
        }
        let labels: Vec<&str> = labels.into_iter().collect();
        let mut out = Vec::new();
        for rule in &rules.rules {
            let matched: Vec<String> = labels
                .iter()
                .filter(|l| l.contains(rule.key.as_str()))
                .map(|l| (*l).to_owned())
                .collect();
            match matched.len() {
                0 => out.push(AznWarning::KeyMatchesNothing {
                    key: rule.key.clone(),
                }),
                1 => {}
                _ => out.push(AznWarning::KeyMatchesSeveral {
                    key: rule.key.clone(),
                    labels: matched,
                }),
            }
        }
        for label in &labels {
            let keys: Vec<String> = rules
                .rules
                .iter()
                .filter(|r| label.contains(r.key.as_str()))
                .map(|r| r.key.clone())
                .collect();
            if keys.len() > 1 {
                out.push(AznWarning::LabelMatchedBySeveral {
                    label: (*label).to_owned(),
                    keys,
                });
            }
        }
        out
    }
}

/// Who may use something the mPlane rules do not cover (a component's `GET /metrics`, a
/// supervisor's listener paths): every accepted peer, or the identities holding one of some
/// `[Roles]` roles. Set by `metrics_roles` and `component_roles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleAccess {
    /// Every peer the server accepted: any certificate the CA signed (everyone, without TLS).
    Anyone,
    /// Identities holding one of these `[Roles]` roles.
    Roles(BTreeSet<String>),
}

impl RoleAccess {
    /// Parses a roles setting: `*`, or a comma-separated list of roles. `None` for an empty
    /// list.
    pub fn parse(text: &str) -> Option<RoleAccess> {
        let roles: BTreeSet<String> = text
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect();
        if roles.contains("*") {
            Some(RoleAccess::Anyone)
        } else if roles.is_empty() {
            None
        } else {
            Some(RoleAccess::Roles(roles))
        }
    }

    /// Whether `identity` is allowed under the roles of `azn`.
    pub fn allows(&self, identity: &Identity, azn: &Azn) -> bool {
        match self {
            RoleAccess::Anyone => true,
            RoleAccess::Roles(want) => azn
                .roles_of(identity)
                .is_some_and(|have| !have.is_disjoint(want)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_access_setting() {
        assert_eq!(RoleAccess::parse(" * "), Some(RoleAccess::Anyone));
        assert_eq!(RoleAccess::parse(" , "), None);
        let Some(RoleAccess::Roles(r)) = RoleAccess::parse("admin, ops") else {
            panic!()
        };
        assert_eq!(r.into_iter().collect::<Vec<_>>(), ["admin", "ops"]);
    }

    fn settings(pairs: &[(&str, &str)]) -> Vec<Setting> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Setting {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
                line: i + 1,
            })
            .collect()
    }

    fn azn(mode: AznMode) -> Azn {
        Azn::from_settings(
            &settings(&[
                ("org.mplane.SSB.Clients.Client-1", "guest"),
                ("org.mplane.SSB.Supervisors.Supervisor-1", "admin,guest"),
            ]),
            &settings(&[
                ("ping", "guest"),
                ("ping-detail", "admin"),
                ("tstat", "admin"),
            ]),
            mode,
        )
    }

    #[test]
    fn off_allows_everything() {
        let a = Azn::off();
        assert!(!a.is_enabled());
        assert_eq!(
            a.decide(&Identity::unauthenticated(), None, None),
            Decision::Unrestricted
        );
        assert!(a.check(&Identity::from("x"), Some("anything"), None));
    }

    #[test]
    fn substring_last_key_wins() {
        let a = azn(AznMode::Substring);
        let client = Identity::from("org.mplane.SSB.Clients.Client-1");
        let sup = Identity::from("org.mplane.SSB.Supervisors.Supervisor-1");
        assert!(a.check(&client, Some("ping-average-ip4"), None));
        // "ping" and "ping-detail" both match; the later "ping-detail" (admin) decides.
        assert_eq!(
            a.decide(&client, Some("ping-detail-ip4"), None),
            Decision::NoCommonRole {
                key: "ping-detail".into()
            }
        );
        assert!(a.check(&sup, Some("ping-detail-ip4"), None));
        assert_eq!(a.decide(&client, Some("other"), None), Decision::NoRule);
        assert_eq!(a.decide(&client, None, Some("ping")), Decision::NoRule);
        assert_eq!(
            a.decide(
                &Identity::from("org.mplane.SSB.Clients"),
                Some("ping-x"),
                None
            ),
            Decision::UnknownIdentity
        );
        assert_eq!(
            a.decide(&sup, Some("tstat-log"), None),
            Decision::Allowed {
                key: "tstat".into(),
                role: "admin".into()
            }
        );
    }

    #[test]
    fn exact_mode_label_or_token() {
        let a = azn(AznMode::Exact);
        let client = Identity::from("org.mplane.SSB.Clients.Client-1");
        assert!(!a.check(&client, Some("ping-average-ip4"), None));
        assert!(a.check(&client, Some("ping"), None));
        assert!(a.check(&client, Some("x"), Some("ping")));
    }

    #[test]
    fn roles_trimmed_with_warnings() {
        let a = Azn::from_settings(
            &settings(&[("id", "guest, admin")]),
            &settings(&[("cap", "admin,,")]),
            AznMode::Substring,
        );
        assert!(a.check(&Identity::from("id"), Some("cap-1"), None));
        assert_eq!(a.warnings().len(), 3, "{:?}", a.warnings());
        assert!(a.warnings()[0].to_string().contains("\" admin\""));
        assert_eq!(
            a.roles_of(&Identity::from("id"))
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            ["admin", "guest"]
        );
    }

    #[test]
    fn lint_reports_overlaps() {
        let a = azn(AznMode::Substring);
        let w = a.lint(["ping-average-ip4", "ping-detail-ip4"]);
        assert!(w.contains(&AznWarning::KeyMatchesSeveral {
            key: "ping".into(),
            labels: vec!["ping-average-ip4".into(), "ping-detail-ip4".into()],
        }));
        assert!(w.contains(&AznWarning::LabelMatchedBySeveral {
            label: "ping-detail-ip4".into(),
            keys: vec!["ping".into(), "ping-detail".into()],
        }));
        assert!(w.contains(&AznWarning::KeyMatchesNothing {
            key: "tstat".into()
        }));
        assert!(azn(AznMode::Exact).lint(["ping"]).is_empty());
    }
}
