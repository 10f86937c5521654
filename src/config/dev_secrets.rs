//! The development secrets file: generated on first start when no JWT key or token key is
//! configured, kept beside a SQLite database or in the user's configuration directory, and
//! refused when others can read it or git tracks it.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;

use super::ConfigError;
use super::settings::DatabaseUrl;

/// Development secrets, generated on first start and kept next to the database.
#[derive(serde::Serialize, serde::Deserialize)]
struct DevSecrets {
    jwt_secret: String,
    token_encryption_key: String,
}

/// Where development secrets for this database live: beside a SQLite file, or for a server
/// database in the user's own configuration directory, one file per database (never in the
/// working directory, which is often a checkout that others can read or commit).
pub fn dev_secrets_path(url: &DatabaseUrl) -> PathBuf {
    let database_url = url.expose();
    let db_path = database_url.strip_prefix("sqlite://").or_else(|| database_url.strip_prefix("sqlite:"));
    match db_path.map(|p| p.split('?').next().unwrap_or(p)) {
        Some(p) if !p.is_empty() && p != ":memory:" => {
            let p = Path::new(p);
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let stem = p.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_else(|| "bankgraph".into());
            dir.join(format!("{stem}.dev-secrets.json"))
        }
        _ => {
            use sha2::Digest;
            let base = std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config"))
                })
                .unwrap_or_else(std::env::temp_dir);
            // Named after the database (its URL without a password), so two databases on one
            // machine do not share secrets.
            let name = url.name();
            let digest = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..8]);
            base.join("bankgraph").join(format!("dev-secrets-{digest}.json"))
        }
    }
}

/// Why a development secrets file must not be used: others can read it, or git tracks it (its
/// secret is then published with the repository, and tokens minted with it are accepted).
fn unsafe_secrets_file(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            return Some(format!(
                "{} can be read by other users (mode {:o}); run `chmod 600` on it or delete it to have new secrets made",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name()?;
    let tracked = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "--error-unmatch", "--"])
        .arg(name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    tracked.then(|| {
        format!(
            "{} is tracked by git, so its secret is public; `git rm --cached` it, rotate anything it signed, and \
             delete it to have new secrets made",
            path.display()
        )
    })
}

pub(super) fn load_or_create_dev_secrets(path: &Path) -> Result<(SecretString, SecretString), ConfigError> {
    if path.exists() {
        if let Some(why) = unsafe_secrets_file(path) {
            return Err(ConfigError(format!("development secrets refused: {why}")));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let s: DevSecrets = serde_json::from_str(&text)
            .map_err(|_| ConfigError(format!("{} is not a valid development secrets file", path.display())))?;
        return Ok((SecretString::from(s.jwt_secret), SecretString::from(s.token_encryption_key)));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|e| ConfigError(format!("cannot create {}: {e}", dir.display())))?;
    }
    use rand::RngCore;
    let mut jwt = [0u8; 32];
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut jwt);
    rand::rng().fill_bytes(&mut key);
    let s = DevSecrets { jwt_secret: STANDARD.encode(jwt), token_encryption_key: STANDARD.encode(key) };
    let text = serde_json::to_string_pretty(&s).map_err(|e| ConfigError(e.to_string()))?;
    write_private(path, &text).map_err(|e| ConfigError(format!("cannot write {}: {e}", path.display())))?;
    Ok((SecretString::from(s.jwt_secret), SecretString::from(s.token_encryption_key)))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(text.as_bytes())
}
