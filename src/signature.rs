//! HMAC-SHA256 signatures of webhook bodies in GitHub's form,
//! `sha256=<lowercase hex>`: the notifier signs what it sends with it, and the
//! GitHub shim checks `X-Hub-Signature-256` with it. Checking is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "sha256=";

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` (`sha256=<hex>`) is the signature of `body` under
/// `secret`. Anything malformed is simply not a match.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix(PREFIX) else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&digest).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_githubs_documented_example() {
        // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
        let signature = sign(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            signature,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(verify(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            &signature
        ));
    }

    #[test]
    fn anything_else_does_not_verify() {
        let good = sign(b"key", b"body");
        for header in [
            "",
            "sha256=",
            "sha1=0123",
            "sha256=zz",
            &good[..good.len() - 2],
            &good.replace("sha256=", "SHA256="),
        ] {
            assert!(!verify(b"key", b"body", header), "{header:?}");
        }
        assert!(!verify(b"other key", b"body", &good));
        assert!(!verify(b"key", b"body!", &good));
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(secret: Vec<u8>, body: Vec<u8>, header: String) {
            let _ = verify(&secret, &body, &header);
            proptest::prop_assert!(verify(&secret, &body, &sign(&secret, &body)));
        }
    }
}
