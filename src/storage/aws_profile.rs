//! S3 settings from the AWS shared files (`~/.aws/credentials` and `~/.aws/config`), read the
//! way the AWS CLI and SDKs read them, for what the environment does not set.
//!
//! object_store takes credentials and the endpoint from `AWS_*` variables, web identity and
//! instance metadata, but has no profiles; the AWS SDK's `aws-config`, which has them, would
//! bring the whole SDK into the build for two small INI files (docs/dependencies.md). So
//! [`resolve`] reads the profile named by `AWS_PROFILE` (`default` when unset):
//!
//! - credentials (`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`) from the
//!   credentials file's `[name]`, else from the config file's `[profile name]` (`[default]`);
//! - `region`, `endpoint_url` and `s3 = … addressing_style = path|virtual` from the config file.
//!
//! The precedence is the SDKs': an `AWS_*` variable wins over the profile (the credentials
//! only as a pair), and `[output.s3]` wins over both (in [`super::store`]). A profile whose
//! credentials come from elsewhere (`role_arn`, `credential_process`, SSO, a web identity file)
//! is refused by name rather than half-read; with no static keys and `AWS_PROFILE` unset, the
//! instance's chain (web identity, instance metadata) goes on as before. A line the parser
//! cannot read is an error naming the file and the line. Secrets are never printed.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a profile adds to the environment's settings (only what the environment lacks).
#[derive(Default, PartialEq, Eq)]
pub struct Settings {
    /// The profile's name and the files it was read from, for messages.
    pub source: String,
    /// Access key id and secret access key, as a pair.
    pub keys: Option<(String, String)>,
    /// The session token that goes with the keys.
    pub session_token: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The endpoint URL.
    pub endpoint: Option<String>,
    /// Path-style requests (`addressing_style = path`) or not (`virtual`).
    pub path_style: Option<bool>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Settings")
            .field("source", &self.source)
            .field("keys", &self.keys.as_ref().map(|(id, _)| id))
            .field("session_token", &self.session_token.is_some())
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// Keys of a profile that get credentials some other way, which lambdaflow does not run.
const ELSEWHERE: &[&str] = &[
    "role_arn",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
];

/// The profile's settings that `env` (a variable's value by name) does not set; `None` when
/// there is no profile to read (no files, and `AWS_PROFILE` unset).
pub fn resolve(env: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>> {
    let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
    let named = env("AWS_PROFILE").filter(|v| !v.is_empty());
    let name = named.clone().unwrap_or_else(|| "default".to_string());
    let home = env("HOME").map(PathBuf::from);
    let file = |var: &str, rel: &str| {
        env(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(rel)))
    };
    let credentials_file = file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let config_file = file("AWS_CONFIG_FILE", ".aws/config");
    let credentials = read(credentials_file.as_deref(), |s| s == name)?;
    let config = read(config_file.as_deref(), |s| {
        s == format!("profile {name}") || (name == "default" && s == "default")
    })?;
    let shown: Vec<String> = [(&credentials, &credentials_file), (&config, &config_file)]
        .iter()
        .filter(|(s, _)| s.is_some())
        .filter_map(|(_, f)| f.as_ref().map(|f| f.display().to_string()))
        .collect();
    let source = format!("AWS profile `{name}` ({})", shown.join(", "));
    if credentials.is_none() && config.is_none() {
        return match named {
            Some(_) => Err(Error::config(format!(
                "AWS_PROFILE={name}: no such profile in {} or {}",
                shown_path(&credentials_file),
                shown_path(&config_file)
            ))),
            None => Ok(None),
        };
    }
    let get = |key: &str| {
        [&credentials, &config]
            .iter()
            .find_map(|s| s.as_ref()?.get(key))
    };
    let mut out = Settings {
        source,
        ..Settings::default()
    };
    let env_keys = set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY");
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        _ if env_keys => {}
        (Some(id), Some(secret)) => {
            out.keys = Some((id.value.clone(), secret.value.clone()));
            out.session_token = get("aws_session_token").map(|t| t.value.clone());
        }
        (Some(one), None) | (None, Some(one)) => {
            return Err(Error::config(format!(
                "{}:{}: AWS profile `{name}` has `{}` without its pair \
                 (aws_access_key_id and aws_secret_access_key go together)",
                one.file.display(),
                one.line,
                one.key
            )));
        }
        (None, None) => {
            if let Some(e) = ELSEWHERE.iter().find_map(|k| get(k)) {
                return Err(Error::config(format!(
                    "{}:{}: AWS profile `{name}` gets its credentials through `{}`, which \
                     lambdaflow does not run; export them instead (`eval \"$(aws configure \
                     export-credentials --profile {name} --format env)\"`)",
                    e.file.display(),
                    e.line,
                    e.key
                )));
            }
        }
    }
    let from_config = |key: &str| config.as_ref().and_then(|s| s.get(key));
    if !set("AWS_REGION") && !set("AWS_DEFAULT_REGION") {
        out.region = from_config("region").map(|v| v.value.clone());
    }
    if !set("AWS_ENDPOINT_URL") && !set("AWS_ENDPOINT") {
        out.endpoint = from_config("endpoint_url").map(|v| v.value.clone());
    }
    if !set("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
        && let Some(v) = from_config("s3.addressing_style")
    {
        out.path_style = match v.value.as_str() {
            "path" => Some(true),
            "virtual" => Some(false),
            "auto" => None,
            other => {
                return Err(Error::config(format!(
                    "{}:{}: `addressing_style = {other}`: expected path, virtual or auto",
                    v.file.display(),
                    v.line
                )));
            }
        };
    }
    Ok(Some(out))
}

fn shown_path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or("(no HOME)".to_string(), |p| p.display().to_string())
}

/// One `key = value` of a section, with where it was written.
struct Value {
    key: String,
    value: String,
    file: PathBuf,
    line: usize,
}

/// The values of the sections `wanted` picks in one file (several such sections merge, a
/// later value replacing an earlier one); `None` when the file or the section is not there.
struct Section(Vec<Value>);

impl Section {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().rev().find(|v| v.key == key)
    }
}

/// Reads `path` as the AWS CLI does: `[section]` headers, `key = value` lines, `#` and `;`
/// comments, and indented `key = value` lines under a key with no value (a nested block, such
/// as `s3 =` followed by `  addressing_style = path`), kept as `s3.addressing_style`.
fn read(path: Option<&Path>, wanted: impl Fn(&str) -> bool) -> Result<Option<Section>> {
    let Some(path) = path else { return Ok(None) };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut found = false;
    let mut values = Vec::new();
    let mut in_wanted = false;
    let mut parent: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let bad = |why: &str| {
            Error::config(format!(
                "{}:{}: {why} (the AWS shared files are `[section]` and `key = value` \
                 lines; the line is not shown, as it may hold a secret)",
                path.display(),
                i + 1
            ))
        };
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| bad("a section header without its `]`"))?;
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            in_wanted = wanted(&name);
            found |= in_wanted;
            parent = None;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| bad("neither a section header nor `key = value`"))?;
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim().to_string());
        let nested = raw.starts_with([' ', '\t']);
        let key = match (&parent, nested) {
            (Some(p), true) => format!("{p}.{key}"),
            _ => {
                parent = value.is_empty().then(|| key.clone());
                key
            }
        };
        if in_wanted {
            values.push(Value {
                key,
                value,
                file: path.to_path_buf(),
                line: i + 1,
            });
        }
    }
    Ok(found.then_some(Section(values)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A HOME with the two files, and an environment of `vars` plus that HOME.
    fn home(credentials: &str, config: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(".aws")).unwrap();
        std::fs::write(d.path().join(".aws/credentials"), credentials).unwrap();
        std::fs::write(d.path().join(".aws/config"), config).unwrap();
        d
    }

    fn env<'a>(
        home: &'a tempfile::TempDir,
        vars: &'a [(&str, &str)],
    ) -> impl Fn(&str) -> Option<String> + 'a {
        let mut m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.insert("HOME".into(), home.path().display().to_string());
        move |k| m.get(k).cloned()
    }

    const CREDENTIALS: &str = "# keys\n[default]\naws_access_key_id = AKIADEFAULT\n\
        aws_secret_access_key = secret-default\n\n[lab]\naws_access_key_id=AKIALAB\n\
        aws_secret_access_key=secret-lab\naws_session_token = token-lab\n";
    const CONFIG: &str = "[default]\nregion = eu-west-3\n\n; the lab's server\n[profile lab]\n\
        region = us-east-1\nendpoint_url = http://127.0.0.1:9000\ns3 =\n  addressing_style = path\n\
        output = json\n";

    #[test]
    fn a_named_profile_gives_its_keys_region_endpoint_and_path_style() {
        let h = home(CREDENTIALS, CONFIG);
        let s = resolve(env(&h, &[("AWS_PROFILE", "lab")]))
            .unwrap()
            .unwrap();
        assert_eq!(s.keys, Some(("AKIALAB".into(), "secret-lab".into())));
        assert_eq!(s.session_token.as_deref(), Some("token-lab"));
        assert_eq!(s.region.as_deref(), Some("us-east-1"));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.path_style, Some(true));
        assert!(s.source.contains("`lab`"), "{}", s.source);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("token-lab"),
            "{shown}"
        );
    }

    #[test]
    fn without_aws_profile_the_default_profile_is_read() {
        let h = home(CREDENTIALS, CONFIG);
        let s = resolve(env(&h, &[])).unwrap().unwrap();
        assert_eq!(
            s.keys,
            Some(("AKIADEFAULT".into(), "secret-default".into()))
        );
        assert_eq!(s.region.as_deref(), Some("eu-west-3"));
        assert_eq!((s.endpoint, s.path_style), (None, None));
    }

    #[test]
    fn the_environment_wins_over_the_profile() {
        let h = home(CREDENTIALS, CONFIG);
        let vars = [
            ("AWS_PROFILE", "lab"),
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "secret-env"),
            ("AWS_REGION", "ap-south-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9999"),
        ];
        let s = resolve(env(&h, &vars)).unwrap().unwrap();
        assert_eq!((s.keys, s.session_token), (None, None));
        assert_eq!((s.region, s.endpoint), (None, None));
        assert_eq!(s.path_style, Some(true));
    }

    #[test]
    fn no_files_and_no_aws_profile_is_nothing_to_read() {
        let h = tempfile::tempdir().unwrap();
        assert!(resolve(env(&h, &[])).unwrap().is_none());
    }

    #[test]
    fn what_cannot_be_used_is_refused_by_name_and_place() {
        let h = home(CREDENTIALS, CONFIG);
        let e = resolve(env(&h, &[("AWS_PROFILE", "prod")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_PROFILE=prod: no such profile"), "{e}");
        assert!(
            e.contains(".aws/credentials") && e.contains(".aws/config"),
            "{e}"
        );

        let h = home("", "[profile ops]\nrole_arn = arn:aws:iam::1:role/x\n");
        let e = resolve(env(&h, &[("AWS_PROFILE", "ops")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(".aws/config:2") && e.contains("`role_arn`"),
            "{e}"
        );

        let h = home("[default]\naws_access_key_id = AKIA\n", "");
        let e = resolve(env(&h, &[])).unwrap_err().to_string();
        assert!(
            e.contains(".aws/credentials:2") && e.contains("without its pair"),
            "{e}"
        );
        assert!(!e.contains("AKIA"), "a key id is not printed either: {e}");

        let h = home("[default\n", "");
        let e = resolve(env(&h, &[])).unwrap_err().to_string();
        assert!(
            e.contains(".aws/credentials:1") && e.contains("without its `]`"),
            "{e}"
        );

        let h = home("[default]\nthis is not a setting\n", "");
        let e = resolve(env(&h, &[])).unwrap_err().to_string();
        assert!(e.contains(".aws/credentials:2"), "{e}");
    }
}
