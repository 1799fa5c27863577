//! A query's fingerprint for logs: literals (strings, numbers, dollar-quoted bodies) replaced by `?`,
//! comments dropped, whitespace collapsed, so no data reaches the log and the same statement always
//! reads the same.

/// The fingerprint of `sql`, at most `max` characters.
pub fn fingerprint(sql: &str, max: usize) -> String {
    let mut out = String::with_capacity(sql.len().min(max));
    let b = sql.as_bytes();
    let mut i = 0;
    let mut last_space = true;
    let push = |out: &mut String, s: &str, last_space: &mut bool| {
        out.push_str(s);
        *last_space = false;
    };
    while i < b.len() && out.len() < max {
        let c = b[i];
        match c {
            b'\'' => {
                // 'string' with '' escapes (E'' backslash escapes too).
                let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E');
                if escapes {
                    out.pop();
                }
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                push(&mut out, "?", &mut last_space);
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'$' if b.get(i + 1).is_some_and(|n| !n.is_ascii_digit()) => {
                // $tag$ ... $tag$
                let end = b[i + 1..].iter().position(|x| *x == b'$').map(|p| i + 1 + p);
                match end {
                    Some(e) => {
                        let tag = &sql[i..=e];
                        let body_end = sql[e + 1..].find(tag).map(|p| e + 1 + p + tag.len()).unwrap_or(b.len());
                        i = body_end;
                        push(&mut out, "?", &mut last_space);
                    }
                    None => {
                        push(&mut out, "$", &mut last_space);
                        i += 1;
                    }
                }
            }
            b'0'..=b'9' if out.chars().last().is_none_or(|p| !(p.is_ascii_alphanumeric() || p == '_' || p == '$')) => {
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e' || b[i] == b'E') {
                    i += 1;
                }
                push(&mut out, "?", &mut last_space);
            }
            c if c.is_ascii_whitespace() => {
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
                i += 1;
            }
            _ => {
                let ch_len = sql[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                push(&mut out, &sql[i..i + ch_len], &mut last_space);
                i += ch_len;
            }
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn literals_and_comments_never_reach_the_log() {
        assert_eq!(
            fingerprint("SELECT * FROM users WHERE email = 'a@b.c' AND id = 42 -- secret\n", 200),
            "SELECT * FROM users WHERE email = ? AND id = ?"
        );
        assert_eq!(
            fingerprint("update t set v = 'it''s',  n = 3.5e2 /* x */ where k = $1", 200),
            "update t set v = ?, n = ? where k = $1"
        );
        assert_eq!(fingerprint("select $$body 'x'$$, $q$ 7 $q$, E'a\\'b', t2.c1", 200), "select ?, ?, ?, t2.c1");
        assert_eq!(fingerprint("select 1", 3), "sel");
    }
}
