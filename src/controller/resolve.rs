//! Reads what a pod references from Secrets, ConfigMaps, its service account and the downward
//! API (env, envFrom, secret / configMap / downwardAPI / projected volumes, imagePullSecrets) so
//! adapters get values, not references.
//!
//! Secret-derived values stay wrapped ([`secrecy`]) all the way to the one request field meant
//! for them. A reference that does not resolve (missing object or key, not optional) makes the
//! pod wait with `CreateContainerConfigError`, as a kubelet does, and is retried.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Service,
};
use kube::api::Api;
use kube::{Client, ResourceExt};
use secrecy::{ExposeSecret, SecretBox, SecretString};

use super::downward::{self, Host};
use super::environment::service_env;
use super::identity;
use super::shared_reads::{self, SharedReads};
use crate::provider::contract::{EnvValue, EnvVar, RegistryCredential, Resolved, VolumeFile};
use crate::provider::kit::expansion::expand;

/// Why a pod's references could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A referenced Secret, ConfigMap or key does not exist. Retryable: it may be created later.
    #[error("{0}")]
    Missing(String),
    /// An imagePullSecret is not a docker config. Not retryable until the Secret changes.
    #[error("{0}")]
    Invalid(String),
    /// The API server failed. Retryable.
    #[error("reading references: {0}")]
    Api(#[from] kube::Error),
    /// No service-account token could be had (account missing, token request refused).
    /// Retryable: the account may be created, the gateway's RBAC fixed.
    #[error("volume {volume}: {source}")]
    Token {
        /// The projected volume.
        volume: String,
        /// Why.
        source: identity::Error,
    },
    /// A downward-API reference has no value. Not retryable: the pod spec is immutable.
    #[error("{what}: {source}")]
    Downward {
        /// Where the reference is.
        what: String,
        /// Why.
        source: downward::Error,
    },
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::Invalid(_) | Error::Downward { .. })
    }
}

/// Secrets and ConfigMaps read once per pod (the namespace's `kube-root-ca.crt` from the
/// shared cache).
struct Reader<'a> {
    ns: String,
    shared: &'a SharedReads,
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret_cache: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    config_map_cache: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl Reader<'_> {
    async fn secret(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>, Error> {
        if !self.secret_cache.contains_key(name) {
            let data = self.secrets.get_opt(name).await?.map(|s| {
                let mut data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, ByteString(v))| (k, v))
                    .collect();
                data.extend(
                    s.string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                );
                data
            });
            self.secret_cache.insert(name.to_string(), data);
        }
        Ok(self.secret_cache[name].as_ref())
    }

    async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<&BTreeMap<String, Vec<u8>>>, Error> {
        if !self.config_map_cache.contains_key(name) {
            let found = if name == shared_reads::ROOT_CA {
                self.shared.root_ca(&self.ns).await?.map(|c| (*c).clone())
            } else {
                self.config_maps.get_opt(name).await?
            };
            let data = found.map(|c| {
                let mut data: BTreeMap<String, Vec<u8>> = c
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    c.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, ByteString(v))| (k, v)),
                );
                data
            });
            self.config_map_cache.insert(name.to_string(), data);
        }
        Ok(self.config_map_cache[name].as_ref())
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Resolves every reference of `pod` with the gateway's client; `host` answers `status.hostIP`
/// and unset resource limits.
// Long on purpose: one pass over every kind of reference a pod has, in the order Kubernetes
// resolves them, each a few lines delegating to the reader.
pub async fn resolve(
    client: &Client,
    shared: &SharedReads,
    pod: &Pod,
    host: Host<'_>,
) -> Result<Arc<Resolved>, Error> {
    let ns = pod.namespace().unwrap_or_default();
    let mut r = Reader {
        ns: ns.clone(),
        shared,
        secrets: Api::namespaced(client.clone(), &ns),
        config_maps: Api::namespaced(client.clone(), &ns),
        secret_cache: BTreeMap::new(),
        config_map_cache: BTreeMap::new(),
    };
    let mut out = Resolved::default();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Arc::new(out));
    };
    let services = service_env(&services_of(shared, &ns, spec.enable_service_links).await?);
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        out.env.insert(
            c.name.clone(),
            container_env(&mut r, pod, c, host, &services).await?,
        );
    }
    for v in spec.volumes.iter().flatten() {
        let mut files = Vec::new();
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let what = format!("volume {}: secret {name}", v.name);
            add_files(
                &mut files,
                r.secret(&name).await?,
                s.items.as_deref(),
                s.optional.unwrap_or(false),
                &what,
            )?;
        } else if let Some(cm) = &v.config_map {
            let what = format!("volume {}: configMap {}", v.name, cm.name);
            add_files(
                &mut files,
                r.config_map(&cm.name).await?,
                cm.items.as_deref(),
                cm.optional.unwrap_or(false),
                &what,
            )?;
        } else if let Some(p) = &v.projected {
            for source in p.sources.iter().flatten() {
                if let Some(s) = &source.secret {
                    let what = format!("volume {}: secret {}", v.name, s.name);
                    add_files(
                        &mut files,
                        r.secret(&s.name).await?,
                        s.items.as_deref(),
                        s.optional.unwrap_or(false),
                        &what,
                    )?;
                }
                if let Some(cm) = &source.config_map {
                    let what = format!("volume {}: configMap {}", v.name, cm.name);
                    add_files(
                        &mut files,
                        r.config_map(&cm.name).await?,
                        cm.items.as_deref(),
                        cm.optional.unwrap_or(false),
                        &what,
                    )?;
                }
                if let Some(d) = &source.downward_api {
                    let items = d.items.as_deref().unwrap_or_default();
                    files.extend(downward_files(pod, &v.name, items, host)?);
                }
                if let Some(t) = &source.service_account_token {
                    let token =
                        identity::token(client, pod, t)
                            .await
                            .map_err(|source| Error::Token {
                                volume: v.name.clone(),
                                source,
                            })?;
                    out.renew_tokens_at = Some(match out.renew_tokens_at {
                        Some(at) => at.min(token.renew_at),
                        None => token.renew_at,
                    });
                    files.push(VolumeFile {
                        path: t.path.clone(),
                        content: token.value,
                    });
                }
            }
        } else if let Some(d) = &v.downward_api {
            let items = d.items.as_deref().unwrap_or_default();
            files.extend(downward_files(pod, &v.name, items, host)?);
        } else {
            continue;
        }
        out.volumes.insert(v.name.clone(), files);
    }
    for reference in spec.image_pull_secrets.iter().flatten() {
        let name = &reference.name;
        let Some(data) = r.secret(name).await? else {
            return Err(Error::Missing(format!("imagePullSecret {name} not found")));
        };
        out.registry_credentials
            .extend(registry_credentials(name, data)?);
    }
    Ok(Arc::new(out))
}

/// The files of a downwardAPI volume or projected source.
fn downward_files(
    pod: &Pod,
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    host: Host<'_>,
) -> Result<Vec<VolumeFile>, Error> {
    items
        .iter()
        .map(|item| {
            let value = match (&item.field_ref, &item.resource_field_ref) {
                (Some(f), _) => downward::field(pod, &f.field_path, host.ip),
                (None, Some(rf)) => {
                    downward::resource(pod, None, rf, host).map_err(|source| Error::Downward {
                        what: format!("volume {volume} item {}", item.path),
                        source,
                    })?
                }
                (None, None) => String::new(),
            };
            Ok(VolumeFile {
                path: item.path.clone(),
                content: SecretBox::new(Box::new(value.into_bytes())),
            })
        })
        .collect()
}

fn add_files(
    files: &mut Vec<VolumeFile>,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    what: &str,
) -> Result<(), Error> {
    let Some(data) = data else {
        return if optional {
            Ok(())
        } else {
            Err(Error::Missing(format!("{what} not found")))
        };
    };
    match items {
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => files.push(VolumeFile {
                        path: item.path.clone(),
                        content: SecretBox::new(Box::new(v.clone())),
                    }),
                    None if optional => {}
                    None => return Err(Error::Missing(format!("{what} has no key {}", item.key))),
                }
            }
        }
        None => files.extend(data.iter().map(|(k, v)| VolumeFile {
            path: k.clone(),
            content: SecretBox::new(Box::new(v.clone())),
        })),
    }
    Ok(())
}

/// Sets `name` in `env`: a later definition replaces an earlier one, as in Kubernetes.
fn set(env: &mut Vec<EnvVar>, name: String, value: EnvValue) {
    env.retain(|e| e.name != name);
    env.push(EnvVar { name, value });
}

/// The Services whose variables a pod of `ns` gets, as a kubelet lists them: the master Service
/// `kubernetes` of `default` always, and every Service of `ns` unless `enableServiceLinks` is off.
async fn services_of(
    shared: &SharedReads,
    ns: &str,
    enable_service_links: Option<bool>,
) -> Result<Vec<Arc<Service>>, Error> {
    let mut services = Vec::new();
    if enable_service_links != Some(false) {
        services = shared.services_in(ns).await?;
    }
    let master = ns != "default" || enable_service_links == Some(false);
    if master && let Some(kubernetes) = shared.master().await? {
        services.push(kubernetes);
    }
    Ok(services)
}

/// The environment of container `c` as a kubelet makes it: its `envFrom` sources, then its
/// `env` entries (literal values with `$(VAR)` expanded against what came before and the
/// Service variables), then the Service variables the container does not set itself.
async fn container_env(
    r: &mut Reader<'_>,
    pod: &Pod,
    c: &Container,
    host: Host<'_>,
    services: &[(String, String)],
) -> Result<Vec<EnvVar>, Error> {
    let mut env: Vec<EnvVar> = Vec::new();
    env_from(r, c, &mut env).await?;
    env_entries(r, pod, c, host, services, &mut env).await?;
    for (name, value) in services {
        if !env.iter().any(|e| &e.name == name) {
            env.push(EnvVar {
                name: name.clone(),
                value: EnvValue::Plain(value.clone()),
            });
        }
    }
    Ok(env)
}

/// A literal env value with `$(VAR)` expanded against `env` so far, then `services`; Secret-derived
/// if it took in a Secret-derived value.
fn literal(value: &str, env: &[EnvVar], services: &[(String, String)]) -> EnvValue {
    let secret = std::cell::Cell::new(false);
    let expanded = expand(value, |name| {
        match env.iter().rev().find(|e| e.name == name).map(|e| &e.value) {
            Some(EnvValue::Plain(v)) => Some(v.clone()),
            Some(EnvValue::Secret(v)) => {
                secret.set(true);
                Some(v.expose_secret().to_string())
            }
            None => services
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone()),
        }
    });
    if secret.get() {
        EnvValue::Secret(SecretString::from(expanded))
    } else {
        EnvValue::Plain(expanded)
    }
}

/// Adds the variables of `c`'s `envFrom` Secrets and ConfigMaps to `env`.
async fn env_from(r: &mut Reader<'_>, c: &Container, env: &mut Vec<EnvVar>) -> Result<(), Error> {
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(s) = &from.secret_ref {
            match r.secret(&s.name).await? {
                Some(data) => {
                    for (k, v) in data.clone() {
                        set(
                            env,
                            format!("{prefix}{k}"),
                            EnvValue::Secret(SecretString::from(text(&v))),
                        );
                    }
                }
                None if s.optional.unwrap_or(false) => {}
                None => {
                    return Err(Error::Missing(format!(
                        "container {}: envFrom secret {} not found",
                        c.name, s.name
                    )));
                }
            }
        }
        if let Some(cm) = &from.config_map_ref {
            match r.config_map(&cm.name).await? {
                Some(data) => {
                    for (k, v) in data.clone() {
                        set(env, format!("{prefix}{k}"), EnvValue::Plain(text(&v)));
                    }
                }
                None if cm.optional.unwrap_or(false) => {}
                None => {
                    return Err(Error::Missing(format!(
                        "container {}: envFrom configMap {} not found",
                        c.name, cm.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Adds `c`'s `env` entries to `env`: values, Secret and ConfigMap keys, downward-API fields
/// and resource fields.
async fn env_entries(
    r: &mut Reader<'_>,
    pod: &Pod,
    c: &Container,
    host: Host<'_>,
    services: &[(String, String)],
    env: &mut Vec<EnvVar>,
) -> Result<(), Error> {
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else {
            let value = literal(e.value.as_deref().unwrap_or_default(), env, services);
            set(env, e.name.clone(), value);
            continue;
        };
        if let Some(s) = &from.secret_key_ref {
            let value = r
                .secret(&s.name)
                .await?
                .and_then(|d| d.get(&s.key))
                .map(|v| text(v));
            match value {
                Some(v) => set(env, e.name.clone(), EnvValue::Secret(SecretString::from(v))),
                None if s.optional.unwrap_or(false) => {}
                None => {
                    return Err(Error::Missing(format!(
                        "container {}: env {}: secret {} key {} not found",
                        c.name, e.name, s.name, s.key
                    )));
                }
            }
        } else if let Some(cm) = &from.config_map_key_ref {
            let value = r
                .config_map(&cm.name)
                .await?
                .and_then(|d| d.get(&cm.key))
                .map(|v| text(v));
            match value {
                Some(v) => set(env, e.name.clone(), EnvValue::Plain(v)),
                None if cm.optional.unwrap_or(false) => {}
                None => {
                    return Err(Error::Missing(format!(
                        "container {}: env {}: configMap {} key {} not found",
                        c.name, e.name, cm.name, cm.key
                    )));
                }
            }
        } else if let Some(f) = &from.field_ref {
            set(
                env,
                e.name.clone(),
                EnvValue::Plain(downward::field(pod, &f.field_path, host.ip)),
            );
        } else if let Some(rf) = &from.resource_field_ref {
            let value =
                downward::resource(pod, Some(c), rf, host).map_err(|source| Error::Downward {
                    what: format!("container {}: env {}", c.name, e.name),
                    source,
                })?;
            set(env, e.name.clone(), EnvValue::Plain(value));
        }
    }
    Ok(())
}

/// The credentials of a `kubernetes.io/dockerconfigjson` (or legacy `dockercfg`) Secret.
fn registry_credentials(
    name: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<RegistryCredential>, Error> {
    let invalid = |why: &str| Error::Invalid(format!("imagePullSecret {name}: {why}"));
    let (json, nested) = match (data.get(".dockerconfigjson"), data.get(".dockercfg")) {
        (Some(j), _) => (j, true),
        (None, Some(j)) => (j, false),
        (None, None) => return Err(invalid("has neither .dockerconfigjson nor .dockercfg")),
    };
    let parsed: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| invalid(&format!("not JSON ({e})")))?;
    let auths = if nested { &parsed["auths"] } else { &parsed };
    let auths = auths.as_object().ok_or_else(|| invalid("has no auths"))?;
    auths
        .iter()
        .map(|(server, entry)| {
            let (mut user, mut pass) = (
                entry["username"].as_str().map(str::to_string),
                entry["password"].as_str().map(str::to_string),
            );
            if let (None, Some(auth)) = (&user, entry["auth"].as_str()) {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth)
                    .map_err(|_| invalid("auth is not base64"))?;
                let (u, p) = text(&decoded)
                    .split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .ok_or_else(|| invalid("auth is not user:password"))?;
                (user, pass) = (Some(u), Some(p));
            }
            let host = server
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
            Ok(RegistryCredential {
                server: host,
                username: user.ok_or_else(|| invalid(&format!("{server} has no username")))?,
                password: SecretString::from(
                    pass.ok_or_else(|| invalid(&format!("{server} has no password")))?,
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dockerconfigjson_secret_yields_server_user_and_wrapped_password() {
        let json =
            br#"{"auths":{"https://myregistry.azurecr.io/":{"username":"u","password":"p4ss"}}}"#
                .to_vec();
        let creds = registry_credentials(
            "pull",
            &BTreeMap::from([(".dockerconfigjson".to_string(), json)]),
        )
        .unwrap();
        assert_eq!(creds[0].server, "myregistry.azurecr.io");
        assert_eq!(creds[0].username, "u");
        assert_eq!(creds[0].password.expose_secret(), "p4ss");
        assert!(
            !format!("{creds:?}").contains("p4ss"),
            "Debug must not print the password"
        );
    }

    #[test]
    fn an_auth_field_is_decoded_into_user_and_password() {
        let json = br#"{"auths":{"ghcr.io":{"auth":"dTpwdw=="}}}"#.to_vec();
        let creds = registry_credentials(
            "pull",
            &BTreeMap::from([(".dockerconfigjson".to_string(), json)]),
        )
        .unwrap();
        assert_eq!(
            (
                creds[0].username.as_str(),
                creds[0].password.expose_secret()
            ),
            ("u", "pw")
        );
    }

    #[test]
    fn a_pull_secret_of_another_type_is_invalid_and_named() {
        let err = registry_credentials(
            "pull",
            &BTreeMap::from([("token".to_string(), b"x".to_vec())]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "imagePullSecret pull: has neither .dockerconfigjson nor .dockercfg"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn a_literal_value_expands_earlier_variables_then_service_ones_and_stays_secret_if_it_took_one()
    {
        let env = vec![
            EnvVar {
                name: "USER".into(),
                value: EnvValue::Plain("app".into()),
            },
            EnvVar {
                name: "PASSWORD".into(),
                value: EnvValue::Secret(SecretString::from("s3cret")),
            },
        ];
        let services = vec![("DB_SERVICE_HOST".to_string(), "10.96.5.5".to_string())];
        let EnvValue::Plain(url) =
            literal("postgres://$(USER)@$(DB_SERVICE_HOST)", &env, &services)
        else {
            panic!("plain inputs make a plain value");
        };
        assert_eq!(url, "postgres://app@10.96.5.5");
        let EnvValue::Secret(dsn) = literal("$(USER):$(PASSWORD)", &env, &services) else {
            panic!("a value that took in a Secret is a Secret");
        };
        assert_eq!(dsn.expose_secret(), "app:s3cret");
    }

    #[test]
    fn items_map_keys_to_paths_and_a_missing_key_is_named() {
        let data = BTreeMap::from([("tls.crt".to_string(), b"cert".to_vec())]);
        let items = vec![KeyToPath {
            key: "tls.crt".into(),
            path: "certs/server.crt".into(),
            mode: None,
            ..Default::default()
        }];
        let mut files = Vec::new();
        add_files(
            &mut files,
            Some(&data),
            Some(&items),
            false,
            "volume certs: secret tls",
        )
        .unwrap();
        assert_eq!(files[0].path, "certs/server.crt");
        assert_eq!(files[0].content.expose_secret().as_slice(), b"cert");
        let missing = vec![KeyToPath {
            key: "tls.key".into(),
            path: "k".into(),
            mode: None,
            ..Default::default()
        }];
        let err = add_files(
            &mut Vec::new(),
            Some(&data),
            Some(&missing),
            false,
            "volume certs: secret tls",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume certs: secret tls has no key tls.key"
        );
    }
}
