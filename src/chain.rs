//! How an error is written for people: its message, then each cause's, once. The errors
//! of this crate leave their source out of their own message (thiserror's `#[source]`),
//! so that nothing is said twice; `chain` is where the causes are written, for log lines,
//! config problems and the CLI's messages. A leaf: `config`, which `logging` imports, uses
//! it too (`logging::chain` is the same function).

/// `err: cause: its cause …`, each message once. Some libraries' errors (redis-rs's)
/// repeat their source's text in their own: a cause already said by the message before it
/// is left out.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut said = text.clone();
    let mut source = err.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !said.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        said = message;
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    /// Says its source's text in its own message, as redis-rs's errors do.
    #[derive(Debug, thiserror::Error)]
    #[error("middle: refused")]
    struct Middle(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    struct Inner;

    #[test]
    fn each_message_of_a_chain_once() {
        assert_eq!(chain(&Outer(Middle(Inner))), "outer: middle: refused");
        assert_eq!(chain(&Middle(Inner)), "middle: refused");
        assert_eq!(chain(&Inner), "refused");
    }
}
