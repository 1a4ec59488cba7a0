//! Splits filter text into tokens. Never fails: characters that start no token of the language
//! become [`Kind::Other`] tokens, so the parser can point at them.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A keyword other than the operators, an address, a number, or an unknown name.
    Word,
    LParen,
    RParen,
    /// `/` of a prefix length.
    Slash,
    /// `not`, `!`.
    Not,
    /// `and`, `&&`.
    And,
    /// `or`, `||`.
    Or,
    /// One character the language has no use for (`[`, `=`, `>`, …).
    Other,
    /// After the last token; its text is empty.
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token<'a> {
    pub kind: Kind,
    pub text: &'a str,
    /// Offset in characters.
    pub pos: usize,
}

/// Characters of words: keywords, numbers, IPv4 and IPv6 addresses (and, so they are reported
/// whole, hostnames and `portrange` ranges).
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '_')
}

/// The tokens of `text`, ending with one [`Kind::End`].
pub(super) fn tokenize(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().enumerate().peekable();
    while let Some((pos, (start, c))) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut end = start + c.len_utf8();
        let kind = if is_word_char(c) {
            while let Some(&(_, (i, c))) = chars.peek() {
                if !is_word_char(c) {
                    break;
                }
                end = i + c.len_utf8();
                chars.next();
            }
            match &text[start..end] {
                "and" => Kind::And,
                "or" => Kind::Or,
                "not" => Kind::Not,
                _ => Kind::Word,
            }
        } else {
            match c {
                '(' => Kind::LParen,
                ')' => Kind::RParen,
                '/' => Kind::Slash,
                '!' => Kind::Not,
                '&' | '|' if chars.peek().is_some_and(|&(_, (_, next))| next == c) => {
                    chars.next();
                    end += 1;
                    if c == '&' {
                        Kind::And
                    } else {
                        Kind::Or
                    }
                }
                _ => Kind::Other,
            }
        };
        tokens.push(Token {
            kind,
            text: &text[start..end],
            pos,
        });
    }
    tokens.push(Token {
        kind: Kind::End,
        text: "",
        pos: text.chars().count(),
    });
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str, usize)> {
        tokenize(text)
            .into_iter()
            .map(|t| (t.kind, t.text, t.pos))
            .collect()
    }

    #[test]
    fn words_operators_and_positions() {
        assert_eq!(
            kinds("src  host 10.0.0.1&&!(port 80)"),
            vec![
                (Kind::Word, "src", 0),
                (Kind::Word, "host", 5),
                (Kind::Word, "10.0.0.1", 10),
                (Kind::And, "&&", 18),
                (Kind::Not, "!", 20),
                (Kind::LParen, "(", 21),
                (Kind::Word, "port", 22),
                (Kind::Word, "80", 27),
                (Kind::RParen, ")", 29),
                (Kind::End, "", 30),
            ]
        );
    }

    #[test]
    fn keyword_operators_are_whole_words_only() {
        assert_eq!(
            kinds("and or not android order nothing"),
            vec![
                (Kind::And, "and", 0),
                (Kind::Or, "or", 4),
                (Kind::Not, "not", 7),
                (Kind::Word, "android", 11),
                (Kind::Word, "order", 19),
                (Kind::Word, "nothing", 25),
                (Kind::End, "", 32),
            ]
        );
    }

    #[test]
    fn ipv6_prefixes_and_double_bars() {
        assert_eq!(
            kinds("fd00::/8||::1"),
            vec![
                (Kind::Word, "fd00::", 0),
                (Kind::Slash, "/", 6),
                (Kind::Word, "8", 7),
                (Kind::Or, "||", 8),
                (Kind::Word, "::1", 10),
                (Kind::End, "", 13),
            ]
        );
    }

    #[test]
    fn single_ampersands_brackets_and_non_ascii_are_other() {
        assert_eq!(
            kinds("tcp[13] & 2 | é"),
            vec![
                (Kind::Word, "tcp", 0),
                (Kind::Other, "[", 3),
                (Kind::Word, "13", 4),
                (Kind::Other, "]", 6),
                (Kind::Other, "&", 8),
                (Kind::Word, "2", 10),
                (Kind::Other, "|", 12),
                (Kind::Other, "é", 14),
                (Kind::End, "", 15),
            ]
        );
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let toks = tokenize("é é tcp");
        assert_eq!(toks[2].text, "tcp");
        assert_eq!(toks[2].pos, 4);
        assert_eq!(toks[3].pos, 7);
    }

    #[test]
    fn empty_and_blank_text_is_just_the_end() {
        assert_eq!(kinds(""), vec![(Kind::End, "", 0)]);
        assert_eq!(kinds(" \t\n"), vec![(Kind::End, "", 3)]);
    }
}
