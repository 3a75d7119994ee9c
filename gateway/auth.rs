//! [`Authenticator`]: checks a request's envelope against settings.yaml's
//! appIds, secrets and keys, in go-infer's order: timestamp window (9802),
//! appId (9805), version (9806), signType (9803), signature (9800).

use std::collections::{HashMap, HashSet};

use sm2::dsa::VerifyingKey;

use super::envelope::{Envelope, FieldError};
use super::signature;
use crate::codes::ErrorKind;
use crate::config::{ApiSettings, KeyError};

pub struct Authenticator {
    secrets: HashMap<String, String>,
    plain_allowed: HashSet<String>,
    shared_sm2: Option<VerifyingKey>,
    per_app_sm2: HashMap<String, VerifyingKey>,
    window_secs: f64,
}

impl Authenticator {
    /// Builds the authenticator; a malformed key is a start-up error naming it.
    pub fn new(api: &ApiSettings) -> Result<Self, KeyError> {
        let shared_sm2 = match api.sm2_private_key.as_deref() {
            Some(k) if !k.trim().is_empty() => Some(
                signature::sm2_signing_key(k)
                    .map_err(|e| KeyError::new("API.SM2PrivateKey", e.to_string()))?
                    .verifying_key()
                    .clone(),
            ),
            _ => None,
        };
        let mut per_app_sm2 = HashMap::new();
        for (app, key) in &api.sm2_public_keys {
            let vk = signature::sm2_verifying_key(key)
                .map_err(|e| KeyError::new(format!("API.SM2PublicKeys.{app}"), e.to_string()))?;
            per_app_sm2.insert(app.clone(), vk);
        }
        Ok(Authenticator {
            secrets: api
                .app_id_secret
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            plain_allowed: api.allow_sign_plain.iter().cloned().collect(),
            shared_sm2,
            per_app_sm2,
            window_secs: api.request_timestamp_diff,
        })
    }

    /// Checks `env` at unix time `now`.
    pub fn verify(&self, env: &Envelope, now: i64) -> Result<(), FieldError> {
        // A client's timestamp can be any i64: the distance, not a difference
        // that overflows.
        if now.abs_diff(env.timestamp) as f64 > self.window_secs {
            return Err((
                ErrorKind::SignFail2,
                format!(
                    "timestamp {} is more than {}s from the server's clock",
                    env.timestamp, self.window_secs
                ),
            ));
        }
        let Some(secret) = self.secrets.get(&env.app_id) else {
            return Err((ErrorKind::SignFail5, format!("appId {:?}", env.app_id)));
        };
        if let Some(v) = &env.version {
            if v != "1" {
                return Err((
                    ErrorKind::SignFail6,
                    format!("version {v:?}, expected \"1\""),
                ));
            }
        }
        match env.sign_type.as_str() {
            "plain" => {
                if self.plain_allowed.contains(&env.app_id) {
                    Ok(())
                } else {
                    Err((
                        ErrorKind::SignFail3,
                        "signType plain is not allowed for this appId".into(),
                    ))
                }
            }
            "SHA256" => {
                if signature::verify_either_form(&env.fields, secret, |s| {
                    signature::sha256_verify(s, &env.sign_data)
                }) {
                    Ok(())
                } else {
                    Err((
                        ErrorKind::SignFail,
                        "SHA256 signature does not match".into(),
                    ))
                }
            }
            "SM2" => {
                let key = self
                    .per_app_sm2
                    .get(&env.app_id)
                    .or(self.shared_sm2.as_ref());
                let Some(key) = key else {
                    return Err((
                        ErrorKind::SignFail3,
                        "no SM2 key is configured for this appId".into(),
                    ));
                };
                let Some(sig) = signature::sm2_signature(&env.sign_data) else {
                    return Err((ErrorKind::SignFail, "signData is not base64(r||s)".into()));
                };
                if signature::verify_either_form(&env.fields, secret, |s| {
                    signature::sm2_verify(key, s, &sig)
                }) {
                    Ok(())
                } else {
                    Err((ErrorKind::SignFail, "SM2 signature does not verify".into()))
                }
            }
            other => Err((ErrorKind::SignFail3, format!("signType {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(timestamp: i64) -> Envelope {
        let body = json!({
            "appId": "app", "signType": "plain", "version": "1",
            "timestamp": timestamp, "data": {},
        });
        Envelope::from_body(body.to_string().as_bytes()).expect("envelope")
    }

    #[test]
    fn any_timestamp_is_judged_by_its_distance_without_overflow() {
        let mut api = ApiSettings::default();
        api.app_id_secret.insert("app".into(), "secret".into());
        api.allow_sign_plain.push("app".into());
        let auth = Authenticator::new(&api).expect("authenticator");
        let now = 1_760_000_000;
        assert!(auth.verify(&envelope(now - 10), now).is_ok());
        for far in [i64::MIN, i64::MAX, now - 301, now + 301] {
            match auth.verify(&envelope(far), now) {
                Err((kind, _)) => assert_eq!(kind, ErrorKind::SignFail2, "{far}"),
                Ok(()) => panic!("timestamp {far} accepted"),
            }
        }
    }
}
