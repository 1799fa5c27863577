//! `pgsluice --print-man`: the manual page, in roff, made from the clap definition (so it lists exactly
//! the options `--help` does) and followed by what clap does not know: signals, files, environment.

use std::io::Write;

/// Written after the options and subcommands, before VERSION.
const MORE: &str = r#".SH SIGNALS
.TP
\fBSIGHUP\fR
Read the config file and every file it names again (as the console's RELOAD). A config that does not
load is refused and the running one stays. Settings marked "restart to change" keep their running
values.
.TP
\fBSIGTERM\fR
Shut down once every client has left (as SHUTDOWN WAIT_FOR_CLIENTS): new logins are refused, clients
already connected are served until they disconnect.
.TP
\fBSIGINT\fR
Safe shutdown (as SHUTDOWN WAIT_FOR_SERVERS): stop accepting over TCP, let open transactions finish,
then exit.
.TP
\fBSIGUSR1\fR, \fBSIGUSR2\fR
PAUSE and RESUME every pool.
.PP
A second SIGTERM or SIGINT during a shutdown exits at once.
.SH ENVIRONMENT
.TP
\fBNOTIFY_SOCKET\fR
Set by systemd for \fIType=notify\fR units: pgsluice reports READY=1 once it listens, RELOADING=1 and
READY=1 around a SIGHUP reload, and STOPPING=1 when a shutdown begins.
.TP
\fBRUST_LOG\fR
Log filter, e.g. \fIpgsluice=debug,info\fR; when set it takes precedence over \fB\-\-log\-level\fR
(default \fIinfo\fR). Logs go to standard error, coloured only on a terminal.
.SH FILES
.TP
\fI/etc/pgsluice/pgsluice.toml\fR
The config of the Debian package's \fBpgsluice.service\fR; every key is commented.
.TP
\fI/etc/pgsluice/userlist.txt\fR
Its auth file: one "user" "secret" line per user (plain, md5 or SCRAM-SHA-256 secrets).
"#;

pub fn print(cmd: clap::Command) -> std::io::Result<()> {
    let commands = commands_section(&cmd);
    // --help's closing summary: the page has SIGNALS, ENVIRONMENT and FILES at length instead.
    let cmd = cmd.after_help(clap::builder::Resettable::<clap::builder::StyledStr>::Reset);
    let man = clap_mangen::Man::new(cmd).title("PGSLUICE").section("1").manual("User Commands");
    let mut page = Vec::new();
    man.render(&mut page)?;
    let page = String::from_utf8_lossy(&page);
    let mut out = String::with_capacity(page.len() + MORE.len() + commands.len());
    // clap_mangen's SUBCOMMANDS points at pages of their own (pgsluice-convert(1)): they are described
    // here instead.
    let sections: Vec<&str> = page.split_inclusive('\n').collect();
    let mut skipping = false;
    for line in sections {
        if line.starts_with(".SH ") {
            skipping = line.starts_with(".SH SUBCOMMANDS");
            if skipping {
                out.push_str(&commands);
            }
            if line.starts_with(".SH VERSION") {
                out.push_str(MORE);
            }
        }
        if !skipping {
            out.push_str(line);
        }
    }
    std::io::stdout().lock().write_all(out.as_bytes())
}

/// `.SH COMMANDS`: each subcommand (but help) with its arguments and what `--help` says of it.
fn commands_section(cmd: &clap::Command) -> String {
    let mut s = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
        let args: Vec<String> =
            sub.get_positionals().map(|a| format!("\\fI{}\\fR", a.get_id().as_str().to_uppercase())).collect();
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        s.push_str(&format!(
            ".TP\n\\fB{} {}\\fR {}\n{}\n",
            cmd.get_name(),
            sub.get_name(),
            args.join(" "),
            roff_text(&about)
        ));
    }
    s
}

/// Plain text as roff: backslashes and dashes escaped, no line starting with a control character.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    escaped
        .lines()
        .map(|l| if l.starts_with(['.', '\'']) { format!("\\&{l}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
}
