//! Names the operating system gives users and groups, read from /etc/passwd and /etc/group (bounded:
//! the first 4 MiB); for peer authentication and unix_socket_group. NSS sources (LDAP, sssd) are not read.

/// Field `key_at` of some line of `path` equals `key`: that line's field `want`.
fn field_of(path: &str, key_at: usize, key: &str, want: usize) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text[..text.len().min(4 << 20)]).into_owned();
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.get(key_at) == Some(&key))
        .and_then(|f| f.get(want).map(|v| v.to_string()))
}

/// The name of the user with id `uid`.
pub fn user_name(uid: u32) -> Option<String> {
    field_of("/etc/passwd", 2, &uid.to_string(), 0)
}

/// The id of group `name` (a number is taken as the id itself).
pub fn group_id(name: &str) -> Option<u32> {
    name.parse().ok().or_else(|| field_of("/etc/group", 0, name, 2)?.parse().ok())
}
