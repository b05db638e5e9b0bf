//! htpasswd files of bcrypt hashes (`htpasswd -B`), each line optionally followed by `:role`.

use super::Role;

/// One user of the file (the hash is not printed).
#[derive(Clone)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The role (viewer when the line names none).
    pub role: Role,
    hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Whether `password` is this user's.
    pub fn verify(&self, password: &str) -> bool {
        bcrypt::verify(password, &self.hash).unwrap_or(false)
    }
}

/// Parses the file; the first bad line is named (`line 3: ...`). Blank lines and `#` comments
/// are skipped.
pub fn parse(text: &str) -> Result<Vec<User>, String> {
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}", n + 1);
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| bad("expected user:hash"))?;
        if name.is_empty() {
            return Err(bad("the user name is empty"));
        }
        // A bcrypt hash has no ':'; what follows one is the role.
        let (hash, role) = match rest.split_once(':') {
            Some((hash, role)) => (hash, role.trim().parse::<Role>().map_err(|e| bad(&e))?),
            None => (rest, Role::Viewer),
        };
        if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$"))
            || hash.parse::<bcrypt::HashParts>().is_err()
        {
            return Err(bad(
                "only bcrypt hashes are accepted ($2y$..., as `htpasswd -B` writes)",
            ));
        }
        users.push(User {
            name: name.to_owned(),
            role,
            hash: hash.to_owned(),
        });
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_lines_with_and_without_a_role() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let text = format!("# users\nalice:{hash}\n\nbob:{hash}:admin\n");
        let users = parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(
            (users[0].name.as_str(), users[0].role),
            ("alice", Role::Viewer)
        );
        assert_eq!(users[1].role, Role::Admin);
        assert!(users[0].verify("pw"));
        assert!(!users[0].verify("wrong"));
    }

    #[test]
    fn other_hashes_and_bad_roles_are_refused_naming_the_line() {
        assert!(
            parse("alice:{SHA}abc\n")
                .unwrap_err()
                .starts_with("line 1:")
        );
        assert!(parse("x\n").unwrap_err().contains("expected user:hash"));
        let hash = bcrypt::hash("pw", 4).unwrap();
        assert!(
            parse(&format!("\nalice:{hash}:boss"))
                .unwrap_err()
                .starts_with("line 2: unknown role")
        );
    }
}
