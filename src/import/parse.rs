//! keepalived.conf's block syntax, read into a tree: `keyword args... { ... }`, `#` and `!`
//! comments, quoted strings with escapes, and `include` (glob patterns and brace expressions,
//! relative to the including file's directory; included text is spliced in where the include
//! stands, as keepalived does). Every [`Node`] keeps the file and line it came from. Reading
//! files is the only I/O; bad input is an [`Error`] naming the file and line, never a panic.

use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The include keyword and its variants (keepalived's checks on them are not applied).
const INCLUDES: &[&str] = &[
    "include", "includer", "includem", "includew", "includeb", "includea",
];

/// Deepest include nesting followed (an include loop stops here with an error).
const MAX_INCLUDE_DEPTH: usize = 16;

/// One word of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The text, quotes removed and escapes resolved.
    pub text: String,
    /// Whether any part of it was quoted.
    pub quoted: bool,
}

/// A statement: a keyword, its arguments, and its block if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The first word.
    pub keyword: String,
    /// The other words of the line.
    pub args: Vec<Word>,
    /// The `{ ... }` block, if the statement opened one.
    pub block: Option<Vec<Node>>,
    /// File the keyword is in.
    pub file: Rc<PathBuf>,
    /// Its line (1-based).
    pub line: usize,
}

impl Node {
    /// The arguments' texts.
    pub fn arg_texts(&self) -> Vec<&str> {
        self.args.iter().map(|w| w.text.as_str()).collect()
    }

    /// `file:line`.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// A syntax or include error, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file.
    pub file: PathBuf,
    /// The line (0 when the whole file is concerned).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for Error {}

/// Something worth telling that is not an error (an include that matched nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `file:line`.
    pub at: String,
    /// The message.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(Word),
    Open,
    Close,
    Newline,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    file: Rc<PathBuf>,
    line: usize,
}

/// Splits `text` (from `file`) into words, braces and line ends.
fn tokenize(text: &str, file: &Rc<PathBuf>) -> Result<Vec<Token>, Error> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let push = |out: &mut Vec<Token>, tok: Tok| {
            out.push(Token {
                tok,
                file: file.clone(),
                line,
            })
        };
        // An include line is taken whole (its pattern may hold `{a,b}` braces), as keepalived
        // reads includes before anything else.
        let t = raw.trim_start();
        if let Some((kw, rest)) = t.split_once(char::is_whitespace) {
            if INCLUDES.contains(&kw) {
                let rest = rest.split(['#', '!']).next().unwrap_or_default().trim();
                push(
                    &mut out,
                    Tok::Word(Word {
                        text: kw.to_string(),
                        quoted: false,
                    }),
                );
                if !rest.is_empty() {
                    let quoted = rest.len() >= 2
                        && (rest.starts_with('"') && rest.ends_with('"')
                            || rest.starts_with('\'') && rest.ends_with('\''));
                    let text = if quoted {
                        &rest[1..rest.len() - 1]
                    } else {
                        rest
                    };
                    push(
                        &mut out,
                        Tok::Word(Word {
                            text: text.to_string(),
                            quoted,
                        }),
                    );
                }
                push(&mut out, Tok::Newline);
                continue;
            }
        }
        let mut chars = raw.chars().peekable();
        let mut cur: Option<Word> = None;
        while let Some(c) = chars.next() {
            match c {
                '#' | '!' => break,
                '{' | '}' => {
                    if let Some(w) = cur.take() {
                        push(&mut out, Tok::Word(w));
                    }
                    push(&mut out, if c == '{' { Tok::Open } else { Tok::Close });
                }
                '"' | '\'' => {
                    let w = cur.get_or_insert(Word {
                        text: String::new(),
                        quoted: false,
                    });
                    w.quoted = true;
                    let mut closed = false;
                    while let Some(q) = chars.next() {
                        if q == c {
                            closed = true;
                            break;
                        }
                        if q == '\\' {
                            unescape(&mut chars, &mut w.text);
                        } else {
                            w.text.push(q);
                        }
                    }
                    if !closed {
                        return Err(Error {
                            file: file.to_path_buf(),
                            line,
                            message: format!("unterminated {c} quote"),
                        });
                    }
                }
                c if c.is_whitespace() => {
                    if let Some(w) = cur.take() {
                        push(&mut out, Tok::Word(w));
                    }
                }
                c => cur
                    .get_or_insert(Word {
                        text: String::new(),
                        quoted: false,
                    })
                    .text
                    .push(c),
            }
        }
        if let Some(w) = cur.take() {
            push(&mut out, Tok::Word(w));
        }
        push(&mut out, Tok::Newline);
    }
    Ok(out)
}

/// One escape inside quotes (the backslash already read), as keepalived's man page lists them.
fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) {
    let Some(e) = chars.next() else {
        out.push('\\');
        return;
    };
    let simple = match e {
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'E' => Some('\x1b'),
        'f' => Some('\x0c'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\x0b'),
        _ => None,
    };
    if let Some(s) = simple {
        out.push(s);
        return;
    }
    let mut num = |radix: u32, max: usize, first: Option<char>| {
        let mut v: u32 = first.and_then(|c| c.to_digit(radix)).unwrap_or(0);
        let mut n = usize::from(first.is_some());
        while n < max {
            match chars.peek().and_then(|c| c.to_digit(radix)) {
                Some(d) => {
                    v = v.wrapping_mul(radix).wrapping_add(d) & 0xff;
                    chars.next();
                    n += 1;
                }
                None => break,
            }
        }
        char::from(v as u8)
    };
    match e {
        '0'..='7' => out.push(num(8, 3, Some(e))),
        'x' => out.push(num(16, 2, None)),
        'c' => {
            if let Some(c) = chars.next() {
                out.push(char::from((c as u32 & 0x1f) as u8));
            }
        }
        other => out.push(other),
    }
}

/// Reads `path` and everything it includes.
pub fn parse_file(path: &Path) -> Result<(Vec<Node>, Vec<Notice>), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read the file: {e}"),
    })?;
    parse_text(&text, path)
}

/// Parses `text` that came from `path` (includes are resolved against `path`'s directory).
pub fn parse_text(text: &str, path: &Path) -> Result<(Vec<Node>, Vec<Notice>), Error> {
    let file = Rc::new(path.to_path_buf());
    let toks = tokenize(text, &file)?;
    let mut p = Parser {
        stack: vec![(toks, 0)],
        notices: Vec::new(),
    };
    let nodes = p.block(None)?;
    Ok((nodes, p.notices))
}

struct Parser {
    /// Token streams: the main file at the bottom, included files above it.
    stack: Vec<(Vec<Token>, usize)>,
    notices: Vec<Notice>,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        loop {
            let (toks, pos) = self.stack.last_mut()?;
            if let Some(t) = toks.get(*pos) {
                *pos += 1;
                return Some(t.clone());
            }
            if self.stack.len() == 1 {
                return None;
            }
            self.stack.pop();
        }
    }

    /// Statements until the `}` closing `opener` (or the end of input for the top level).
    fn block(&mut self, opener: Option<&Node>) -> Result<Vec<Node>, Error> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut cur: Option<Node> = None;
        // The last statement ended at a line end and has no block yet: a `{` alone on the next
        // line opens its block.
        let mut open_ok = false;
        loop {
            let Some(t) = self.next() else {
                if let Some(n) = cur.take() {
                    nodes.push(n);
                }
                return match opener {
                    None => Ok(nodes),
                    Some(o) => Err(Error {
                        file: o.file.to_path_buf(),
                        line: o.line,
                        message: format!("'{}' block is not closed (missing '}}')", o.keyword),
                    }),
                };
            };
            match t.tok {
                Tok::Word(w) => match &mut cur {
                    Some(n) => n.args.push(w),
                    None => {
                        cur = Some(Node {
                            keyword: w.text,
                            args: Vec::new(),
                            block: None,
                            file: t.file.clone(),
                            line: t.line,
                        })
                    }
                },
                Tok::Newline => {
                    if let Some(n) = cur.take() {
                        if self.include(&n)? {
                            open_ok = false;
                            continue;
                        }
                        nodes.push(n);
                        open_ok = true;
                    }
                }
                Tok::Open => {
                    let mut n = match cur.take() {
                        Some(n) => n,
                        None if open_ok && nodes.last().is_some_and(|n| n.block.is_none()) => {
                            nodes.pop().expect("checked")
                        }
                        None => {
                            return Err(Error {
                                file: t.file.to_path_buf(),
                                line: t.line,
                                message: "'{' without a keyword before it".into(),
                            })
                        }
                    };
                    n.block = Some(self.block(Some(&n))?);
                    nodes.push(n);
                    open_ok = false;
                }
                Tok::Close => {
                    if let Some(n) = cur.take() {
                        nodes.push(n);
                    }
                    if opener.is_none() {
                        return Err(Error {
                            file: t.file.to_path_buf(),
                            line: t.line,
                            message: "'}' without a block to close".into(),
                        });
                    }
                    return Ok(nodes);
                }
            }
        }
    }

    /// Splices the files an `include` statement names into the token stream. False when `n`
    /// is not an include.
    fn include(&mut self, n: &Node) -> Result<bool, Error> {
        if !INCLUDES.contains(&n.keyword.as_str()) || n.block.is_some() {
            return Ok(false);
        }
        let err = |message: String| Error {
            file: n.file.to_path_buf(),
            line: n.line,
            message,
        };
        let [pattern] = n.args.as_slice() else {
            return Err(err(format!(
                "'{}' takes one file name or pattern",
                n.keyword
            )));
        };
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return Err(err(format!(
                "includes nested deeper than {MAX_INCLUDE_DEPTH} (an include loop?)"
            )));
        }
        let dir = n.file.parent().unwrap_or(Path::new("."));
        let full = if Path::new(&pattern.text).is_absolute() {
            pattern.text.clone()
        } else {
            dir.join(&pattern.text).to_string_lossy().into_owned()
        };
        let files = glob(&full);
        if files.is_empty() {
            self.notices.push(Notice {
                at: n.at(),
                message: format!("include {:?} matched no file", pattern.text),
            });
            return Ok(true);
        }
        // Pushed in reverse so that the first file is read first.
        for f in files.into_iter().rev() {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| err(format!("cannot read included file {}: {e}", f.display())))?;
            let toks = tokenize(&text, &Rc::new(f))?;
            self.stack.push((toks, 0));
        }
        Ok(true)
    }
}

/// Expands `{a,b}` brace expressions (nested ones too), left to right.
fn braces(p: &str) -> Vec<String> {
    let b = p.as_bytes();
    let Some(open) = p.find('{') else {
        return vec![p.to_string()];
    };
    let mut depth = 0;
    let mut commas = Vec::new();
    let mut close = None;
    for (i, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![p.to_string()];
    };
    let (pre, post) = (&p[..open], &p[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let alt = &p[w[0] + 1..w[1]];
        out.extend(braces(&format!("{pre}{alt}{post}")));
    }
    out
}

/// Shell-style match of one path component: `*`, `?`, `[...]` (with `!`/`^` and ranges).
fn matches(pat: &[char], name: &[char]) -> bool {
    match pat.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|i| matches(&pat[1..], &name[i..])),
        Some('?') => !name.is_empty() && matches(&pat[1..], &name[1..]),
        Some('[') => {
            let Some(end) = pat.iter().skip(2).position(|&c| c == ']').map(|e| e + 2) else {
                return name.first() == Some(&'[') && matches(&pat[1..], &name[1..]);
            };
            let Some(&c) = name.first() else { return false };
            let mut set = &pat[1..end];
            let neg = matches!(set.first(), Some('!' | '^'));
            if neg {
                set = &set[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != neg && matches(&pat[end + 1..], &name[1..])
        }
        Some(&p) => name.first() == Some(&p) && matches(&pat[1..], &name[1..]),
    }
}

/// The files `pattern` names, sorted per pattern as glob(3) does; hidden files only when the
/// pattern's component starts with a dot.
fn glob(pattern: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in braces(pattern) {
        let mut found = Vec::new();
        let abs = p.starts_with('/');
        let mut paths = vec![PathBuf::from(if abs { "/" } else { "" })];
        let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let wild = comp.contains(['*', '?', '[']);
            let mut next = Vec::new();
            for base in &paths {
                if !wild {
                    let q = base.join(comp);
                    if if last { q.is_file() } else { q.is_dir() } {
                        next.push(q);
                    }
                    continue;
                }
                let dir = if base.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    base.as_path()
                };
                let Ok(rd) = std::fs::read_dir(dir) else {
                    continue;
                };
                let pat: Vec<char> = comp.chars().collect();
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.') || comp.starts_with('.'))
                    .filter(|n| matches(&pat, &n.chars().collect::<Vec<_>>()))
                    .collect();
                names.sort();
                for n in names {
                    let q = base.join(n);
                    if if last { q.is_file() } else { q.is_dir() } {
                        next.push(q);
                    }
                }
            }
            paths = next;
        }
        if !comps.is_empty() {
            found.extend(paths);
        }
        out.extend(found);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Vec<Node>, Error> {
        parse_text(t, Path::new("/nonexistent/k.conf")).map(|(n, _)| n)
    }

    #[test]
    fn blocks_comments_and_quotes() {
        let n = parse(
            "! comment\nglobal_defs {\n  router_id LVS_1 # trailing\n}\n\
             virtual_server 10.0.0.1 80 {\n  lb_algo rr\n  real_server 10.1.0.1 80 {\n    \
             notify_up \"/bin/echo up now\" root\n    weight 2 }\n}\n\
             vrrp_instance VI { virtual_ipaddress { 10.0.0.1/24 dev eth0 } }\n\
             q abcd\" efg h jkl \"mnop 'a\\tb' \"\\x41\\101\\\"\"\n",
        )
        .unwrap();
        assert_eq!(n.len(), 4);
        assert_eq!((n[0].keyword.as_str(), n[0].line), ("global_defs", 2));
        let g = n[0].block.as_ref().unwrap();
        assert_eq!(g[0].arg_texts(), ["LVS_1"]);
        let vs = &n[1];
        assert_eq!(vs.arg_texts(), ["10.0.0.1", "80"]);
        let rs = &vs.block.as_ref().unwrap()[1];
        assert_eq!((rs.keyword.as_str(), rs.line), ("real_server", 7));
        let rsb = rs.block.as_ref().unwrap();
        assert_eq!(rsb[0].args[0].text, "/bin/echo up now");
        assert!(rsb[0].args[0].quoted && !rsb[0].args[1].quoted);
        assert_eq!((rsb[1].keyword.as_str(), rsb[1].line), ("weight", 9));
        let vi = n[2].block.as_ref().unwrap();
        assert_eq!(
            vi[0].block.as_ref().unwrap()[0].arg_texts(),
            ["dev", "eth0"]
        );
        assert_eq!(
            n[3].arg_texts(),
            ["abcd efg h jkl mnop", "a\tb", "AA\""],
            "quotes join words, escapes resolve"
        );
    }

    #[test]
    fn brace_on_its_own_line_opens_the_previous_statement() {
        let n = parse("virtual_server 1.2.3.4 80\n{\n  lb_algo rr\n}\n").unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].block.as_ref().unwrap()[0].keyword, "lb_algo");
    }

    #[test]
    fn malformed_input_is_an_error_with_file_and_line() {
        for (text, line, needle) in [
            ("a {\n b 1\n", 1, "not closed"),
            ("a {\n}\n}\n", 3, "without a block"),
            ("x\n\n{\n}\n{\n}", 5, "without a keyword"),
            ("a \"open\n", 1, "unterminated"),
            ("a {\n include\n}\n", 2, "takes one file"),
            ("{", 1, "without a keyword"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("/nonexistent/k.conf:{line}: ")),
                "{e}"
            );
        }
        // Odd bytes never panic.
        for text in ["\"\\", "'\\x", "\\\\{}}", "a\u{0}{", "\"\\c", "}}}}"] {
            let _ = parse(text);
        }
    }

    #[test]
    fn includes_follow_globs_relative_to_the_including_file() {
        let dir = std::env::temp_dir().join(format!("tapvs-import-parse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf.d/sub")).unwrap();
        std::fs::write(
            dir.join("main.conf"),
            "include conf.d/*.conf\nvirtual_server 1.1.1.1 80 {\n include conf.d/sub/{rs1,rs2}.inc\n}\ninclude none/*.conf\n",
        )
        .unwrap();
        std::fs::write(dir.join("conf.d/b.conf"), "b_kw 2\n").unwrap();
        std::fs::write(dir.join("conf.d/a.conf"), "a_kw 1\ninclude sub/x.inc\n").unwrap();
        std::fs::write(dir.join("conf.d/sub/x.inc"), "x_kw\n").unwrap();
        std::fs::write(
            dir.join("conf.d/sub/rs1.inc"),
            "real_server 2.2.2.1 80 {\n}\n",
        )
        .unwrap();
        std::fs::write(dir.join("conf.d/sub/rs2.inc"), "real_server 2.2.2.2 80\n").unwrap();
        std::fs::write(dir.join("loop.conf"), "include loop.conf\n").unwrap();
        let (n, notes) = parse_file(&dir.join("main.conf")).unwrap();
        let kws: Vec<&str> = n.iter().map(|n| n.keyword.as_str()).collect();
        assert_eq!(kws, ["a_kw", "x_kw", "b_kw", "virtual_server"]);
        assert_eq!(n[1].file.as_path(), dir.join("conf.d/sub/x.inc"));
        let rs = n[3].block.as_ref().unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[1].arg_texts(), ["2.2.2.2", "80"]);
        assert_eq!(
            (rs[1].line, rs[1].file.as_path()),
            (1, dir.join("conf.d/sub/rs2.inc").as_path())
        );
        assert_eq!(notes.len(), 1);
        assert!(notes[0].at.ends_with("main.conf:5"), "{notes:?}");
        let e = parse_file(&dir.join("loop.conf")).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        let e = parse_file(&dir.join("missing.conf")).unwrap_err();
        assert!(e.to_string().contains("missing.conf: cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn glob_pieces() {
        let m = |p: &str, n: &str| {
            matches(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("*.conf", "a.conf") && !m("*.conf", "a.con"));
        assert!(m("a?[0-9]", "ab7") && !m("a?[!0-9]", "ab7"));
        assert!(m("[", "[") && m("x*", "x"));
        assert_eq!(braces("a{b,c{d,e}}f"), ["abf", "acdf", "acef"]);
        assert_eq!(braces("a{b"), ["a{b"]);
    }
}
