//! Who may read alerts and give verdicts: users from a file of Argon2id password hashes, sessions
//! that expire, and a CSRF token per session that every form must return.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "fs_review";

/// A logged-in analyst.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// Must come back with every form post.
    pub csrf: String,
    expires: Instant,
}

/// Users and their sessions.
pub struct Auth {
    users: HashMap<String, String>,
    sessions: Mutex<HashMap<String, Session>>,
    ttl: Duration,
}

/// Why the users file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("users file {path}, line {line}: {reason} (each line is `name:<hash>`; make a hash with `review hash-password`)")]
pub struct UsersFileError {
    path: String,
    line: usize,
    reason: String,
}

impl Auth {
    /// Reads `user:$argon2id$...` lines (`#` comments and blank lines skipped).
    pub fn from_file(path: &Path, ttl: Duration) -> Result<Self, UsersFileError> {
        let error = |line, reason: String| UsersFileError {
            path: path.display().to_string(),
            line,
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(0, e.to_string()))?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, hash) = line
                .split_once(':')
                .ok_or_else(|| error(i + 1, "no `:` between the name and the hash".into()))?;
            PasswordHash::new(hash)
                .map_err(|e| error(i + 1, format!("not a password hash: {e}")))?;
            users.insert(name.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err(error(0, "no users".into()));
        }
        Ok(Auth {
            users,
            sessions: Mutex::new(HashMap::new()),
            ttl,
        })
    }

    /// A new session for `user` when `password` is theirs; the session's token is the cookie.
    pub fn login(&self, user: &str, password: &str) -> Option<(String, Session)> {
        let hash = PasswordHash::new(self.users.get(user)?).ok()?;
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .ok()?;
        let session = Session {
            user: user.to_string(),
            csrf: token(),
            expires: Instant::now() + self.ttl,
        };
        let id = token();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        sessions.retain(|_, s| s.expires > Instant::now());
        sessions.insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// The live session of a cookie value.
    pub fn session(&self, id: &str) -> Option<Session> {
        let sessions = self.sessions.lock().expect("sessions lock");
        sessions
            .get(id)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    pub fn logout(&self, id: &str) {
        self.sessions.lock().expect("sessions lock").remove(id);
    }
}

/// 128 random bits, hex.
fn token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The PHC string of `password` (Argon2id, random salt) for the users file.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt_bytes: [u8; 16] = rand::rng().random();
    let salt = SaltString::encode_b64(&salt_bytes)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_logs_in_and_nothing_else_does() {
        let dir = std::env::temp_dir().join(format!("review-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        let hash = hash_password("s3cret").unwrap();
        std::fs::write(&path, format!("# analysts\nana:{hash}\n")).unwrap();
        let auth = Auth::from_file(&path, Duration::from_millis(200)).unwrap();
        assert!(auth.login("ana", "wrong").is_none());
        assert!(auth.login("bob", "s3cret").is_none());
        let (id, session) = auth.login("ana", "s3cret").unwrap();
        assert_eq!(session.user, "ana");
        assert_eq!(auth.session(&id).unwrap().csrf, session.csrf);
        std::thread::sleep(Duration::from_millis(250));
        assert!(auth.session(&id).is_none(), "sessions expire");
        std::fs::write(&path, "ana:plaintext\n").unwrap();
        let e = Auth::from_file(&path, Duration::from_secs(1))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("line 1") && e.contains("review hash-password"),
            "{e}"
        );
        assert_eq!(cookie("a=1; fs_review=abc; b=2", COOKIE), Some("abc"));
    }
}
