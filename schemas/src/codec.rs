//! Confluent wire format through a schema registry.
//!
//! Registration and schema lookup by id go through `schema_registry_converter` (cached, one
//! request per subject or id per process). The Avro body of the hot-path records (transactions,
//! predictions, labels) is written and read by hand (`binary.rs`, checked byte for byte against
//! apache-avro in its tests); other records use apache-avro's schema-aware serde.
//! A record written with a different schema than ours (an older or newer producer) is resolved
//! against our schema first, so adding an optional field never breaks a running consumer.

use crate::types::AvroRecord;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// How to reach the schema registry: its URL, basic-auth credentials (Confluent Cloud, Redpanda
/// Cloud: an API key and secret) and a CA file for a registry whose certificate a private CA
/// signed. Debug never shows the password.
#[derive(Clone, Default)]
pub struct RegistryConfig {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &redact_url(&self.url))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `url` without the password of any `user:password@` it carries, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:<redacted>@{host}{}", &rest[host_end..])
        }
        None => url.to_string(),
    }
}

/// Errors of encoding, decoding and talking to the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    #[error(
        "schema registry at {url}: {message} (is the registry running? check SCHEMA_REGISTRY_URL)"
    )]
    Registry { url: String, message: String },
    #[error(
        "schema registry CA file {path}: {reason} (set SCHEMA_REGISTRY_CA_FILE to a PEM file)"
    )]
    CaFile { path: String, reason: String },
    #[error("schema registry client for {url}: {message}")]
    Client { url: String, message: String },
    #[error("not in Confluent wire format: {0}")]
    WireFormat(String),
    #[error("Avro encoding of {record} failed: {source}")]
    Encode {
        record: &'static str,
        source: apache_avro::Error,
    },
    #[error("Avro body of a {record} (writer schema id {schema_id}): {reason}")]
    Body {
        record: &'static str,
        schema_id: u32,
        reason: String,
    },
    #[error("Avro decoding as {record} (writer schema id {schema_id}) failed: {source}")]
    Decode {
        record: &'static str,
        schema_id: u32,
        source: apache_avro::Error,
    },
}

impl SchemaError {
    /// True when the registry could not answer (unreachable, timed out, 5xx): a retry can succeed,
    /// so the record must wait, not be dead-lettered. A 404 for an id is the record's own fault.
    pub fn is_registry_unavailable(&self) -> bool {
        match self {
            SchemaError::Registry { message, .. } => {
                message.contains("retriable: true") || message.contains("status 5")
            }
            _ => false,
        }
    }
}

/// A writer schema fetched by id, with its fingerprint: equal to one of our types' means that
/// type reads it without resolution.
struct WriterSchema {
    schema: Schema,
    fingerprint: u64,
}

/// Encodes and decodes [`AvroRecord`]s in the Confluent wire format. Cheap to share (`Arc`).
pub struct Codec {
    url: String,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    ids: RwLock<HashMap<String, u32>>,
    writers: RwLock<HashMap<u32, Arc<WriterSchema>>>,
    /// Ids the registry refused while answering (a 404), with when and its message: asked again
    /// after [`REFUSAL_TTL`], so a schema restored from a backup is seen without a restart, but
    /// not once per record that carries the id.
    refused: RwLock<HashMap<u32, (std::time::Instant, String)>>,
}

/// How long a registry's "no such schema" stands before the id is asked for again.
pub const REFUSAL_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl Codec {
    /// A codec for the registry at `url` (Confluent API; for Apicurio use `.../apis/ccompat/v7`),
    /// without credentials.
    pub fn new(url: &str) -> Self {
        let settings = SrSettings::new(url.trim_end_matches('/').to_string());
        Self::with_settings(url, settings)
    }

    /// A codec for the registry `cfg` describes: basic auth and a private CA when given.
    pub fn with_config(cfg: &RegistryConfig) -> Result<Self, SchemaError> {
        let mut builder = SrSettings::new_builder(cfg.url.trim_end_matches('/').to_string());
        if let Some(user) = &cfg.user {
            builder.set_basic_authorization(user, cfg.password.as_deref());
        }
        // Bounded, so a registry that hangs is an outage to wait out (and retry), not a
        // consumer stuck for ever on one request. Seconds-slow answers still get through.
        let mut client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30));
        if let Some(path) = &cfg.ca_file {
            let ca_error = |reason: String| SchemaError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ca_error(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(ca_error("no certificate in the file".into()));
            }
            for cert in certs {
                client = client.add_root_certificate(cert);
            }
        }
        let settings = builder
            .build_with(client)
            .map_err(|e| SchemaError::Client {
                url: redact_url(&cfg.url),
                message: e.to_string(),
            })?;
        Ok(Self::with_settings(&cfg.url, settings))
    }

    fn with_settings(url: &str, settings: SrSettings) -> Self {
        Codec {
            url: redact_url(url),
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings),
            ids: RwLock::new(HashMap::new()),
            writers: RwLock::new(HashMap::new()),
            refused: RwLock::new(HashMap::new()),
        }
    }

    /// A registry failure, with what to set when the registry refused us: a 401 is the
    /// credentials, a TLS failure the CA.
    fn registry_error(&self, e: impl std::fmt::Display) -> SchemaError {
        let mut message = e.to_string();
        let lower = message.to_lowercase();
        if lower.contains("401") || lower.contains("unauthorized") {
            message.push_str(
                "; the registry refused the credentials: set SCHEMA_REGISTRY_USER and SCHEMA_REGISTRY_PASSWORD",
            );
        } else if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("ssl")
            || (self.url.starts_with("https:") && lower.contains("error sending request"))
        {
            // The registry client drops the TLS cause: a request to an https registry that never
            // got an answer is most often an untrusted certificate.
            message.push_str("; if a private CA signed the registry's certificate, set SCHEMA_REGISTRY_CA_FILE to its PEM file");
        }
        SchemaError::Registry {
            url: self.url.clone(),
            message,
        }
    }

    /// The registry id of `T`'s schema under `<topic>-value`, registering it on first use.
    pub async fn schema_id<T: AvroRecord>(&self, topic: &str) -> Result<u32, SchemaError> {
        let subject = crate::topics::value_subject(topic);
        if let Some(id) = self.ids.read().unwrap().get(&subject) {
            return Ok(*id);
        }
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, T::SCHEMA_JSON.to_string());
        let strategy =
            SubjectNameStrategy::TopicNameStrategyWithSchema(topic.into(), false, supplied);
        let registered = self
            .encoder
            .get_schema_and_id(&subject, strategy)
            .await
            .map_err(|e| {
                let e = self.registry_error(e);
                if e.is_registry_unavailable() {
                    self.encoder.remove_errors_from_cache();
                }
                e
            })?;
        self.ids.write().unwrap().insert(subject, registered.id);
        Ok(registered.id)
    }

    /// Encodes `value` for `topic`: magic byte, schema id, Avro body.
    pub async fn encode<T: AvroRecord>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, SchemaError> {
        let id = self.schema_id::<T>(topic).await?;
        encode_with_id(id, value)
    }

    /// Encodes with a schema id already obtained from [`Codec::schema_id`]: no registry call and
    /// no await, for hot loops.
    pub fn encode_with_id<T: AvroRecord>(id: u32, value: &T) -> Result<Vec<u8>, SchemaError> {
        encode_with_id(id, value)
    }

    /// Like [`Codec::encode_with_id`], appending to `out` (many records in one buffer).
    pub fn encode_into<T: AvroRecord>(
        id: u32,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), SchemaError> {
        encode_into(id, value, out)
    }

    /// The writer schema with registry id `id` (fetched once, then cached).
    async fn writer_schema(&self, id: u32) -> Result<Arc<WriterSchema>, SchemaError> {
        if let Some(w) = self.writers.read().unwrap().get(&id) {
            return Ok(w.clone());
        }
        if let Some((at, message)) = self.refused.read().unwrap().get(&id) {
            if at.elapsed() < REFUSAL_TTL {
                return Err(SchemaError::Registry {
                    url: self.url.clone(),
                    message: message.clone(),
                });
            }
        }
        let fetched = self.decoder.get_schema(id).await.map_err(|e| {
            // The client keeps a failure for ever (a 500 or 504 too): ours expire instead.
            self.decoder.remove_errors_from_cache();
            let e = self.registry_error(e);
            if let SchemaError::Registry { message, .. } = &e {
                if !e.is_registry_unavailable() {
                    let refusal = (std::time::Instant::now(), message.clone());
                    self.refused.write().unwrap().insert(id, refusal);
                }
            }
            e
        })?;
        self.refused.write().unwrap().remove(&id);
        let writer = Arc::new(WriterSchema {
            fingerprint: crate::types::fingerprint_of(&fetched.parsed),
            schema: fetched.parsed.clone(),
        });
        self.writers.write().unwrap().insert(id, writer.clone());
        Ok(writer)
    }

    /// Decodes without waiting when the writer schema is already cached (the hot path of a
    /// consumer thread); `None` when the schema must first be fetched with [`Codec::decode`].
    pub fn decode_cached<T: AvroRecord>(&self, payload: &[u8]) -> Option<Result<T, SchemaError>> {
        let (id, body) = match split_wire_format(payload) {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        let writer = self.writers.read().unwrap().get(&id)?.clone();
        Some(decode_body(&writer, id, body))
    }

    /// Decodes a wire-format payload as `T`, resolving the writer's schema against `T`'s.
    pub async fn decode<T: AvroRecord>(&self, payload: &[u8]) -> Result<T, SchemaError> {
        let (id, body) = split_wire_format(payload)?;
        let writer = self.writer_schema(id).await?;
        decode_body(&writer, id, body)
    }
}

/// Splits a Confluent payload into schema id and Avro body.
pub(crate) fn split_wire_format(payload: &[u8]) -> Result<(u32, &[u8]), SchemaError> {
    match payload {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [] => Err(SchemaError::WireFormat("empty payload".into())),
        [m, ..] if *m != 0 => Err(SchemaError::WireFormat(format!(
            "magic byte is {m}, expected 0 (was this written without a schema registry serializer?)"
        ))),
        _ => Err(SchemaError::WireFormat(format!(
            "payload of {} bytes is shorter than the 5-byte header",
            payload.len()
        ))),
    }
}

fn encode_with_id<T: AvroRecord>(id: u32, value: &T) -> Result<Vec<u8>, SchemaError> {
    let mut out = Vec::with_capacity(160);
    encode_into(id, value, &mut out)?;
    Ok(out)
}

fn encode_into<T: AvroRecord>(id: u32, value: &T, out: &mut Vec<u8>) -> Result<(), SchemaError> {
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    if value.write_binary(out) {
        return Ok(());
    }
    T::datum_writer()
        .write_ser(out, value)
        .map_err(|source| SchemaError::Encode {
            record: type_name::<T>(),
            source,
        })?;
    Ok(())
}

fn decode_body<T: AvroRecord>(
    writer: &WriterSchema,
    id: u32,
    mut body: &[u8],
) -> Result<T, SchemaError> {
    let err = |source| SchemaError::Decode {
        record: type_name::<T>(),
        schema_id: id,
        source,
    };
    if writer.fingerprint == T::fingerprint() {
        // Same schema as ours: read straight into T, by hand when the type has a binary form.
        if let Some(read) = T::read_binary(body) {
            let (value, rest) = read.map_err(|reason| SchemaError::Body {
                record: type_name::<T>(),
                schema_id: id,
                reason,
            })?;
            trailing_bytes_check(rest, id)?;
            return Ok(value);
        }
        let reader = GenericDatumReader::builder(&writer.schema)
            .human_readable(false)
            .build()
            .map_err(err)?;
        let value: T = reader.read_deser(&mut body).map_err(err)?;
        trailing_bytes_check(body, id)?;
        return Ok(value);
    }
    // Another version of the schema: resolve the writer's data against our reader schema.
    let reader = GenericDatumReader::builder(&writer.schema)
        .reader_schema(T::schema())
        .build()
        .map_err(err)?;
    let value = reader.read_value(&mut body).map_err(err)?;
    trailing_bytes_check(body, id)?;
    apache_avro::from_value(&value).map_err(err)
}

fn trailing_bytes_check(rest: &[u8], id: u32) -> Result<(), SchemaError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::WireFormat(format!(
            "{} bytes left over after the record (schema id {id}): the payload does not match its schema",
            rest.len()
        )))
    }
}

fn type_name<T>() -> &'static str {
    std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("record")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Reason, Transaction, TransactionType};
    use apache_avro::writer::datum::GenericDatumWriter;

    fn tx() -> Transaction {
        Transaction {
            transaction_id: "tx-1".into(),
            event_time: 1_700_000_000_123,
            step: 7,
            tx_type: TransactionType::CashOut,
            amount: 181.0,
            name_orig: "C840083671".into(),
            oldbalance_org: 181.0,
            newbalance_orig: 0.0,
            name_dest: "C38997010".into(),
            oldbalance_dest: 21182.0,
            newbalance_dest: 0.0,
            is_flagged_fraud: false,
        }
    }

    fn writer_for<T: AvroRecord>() -> WriterSchema {
        WriterSchema {
            schema: T::schema().clone(),
            fingerprint: T::fingerprint(),
        }
    }

    #[test]
    fn wire_format_round_trip_without_registry() {
        let bytes = encode_with_id(42, &tx()).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 42]);
        let (id, body) = split_wire_format(&bytes).unwrap();
        assert_eq!(id, 42);
        let back: Transaction = decode_body(&writer_for::<Transaction>(), id, body).unwrap();
        assert_eq!(back, tx());
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        assert!(split_wire_format(&[])
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(split_wire_format(&[1, 0, 0, 0, 1, 2])
            .unwrap_err()
            .to_string()
            .contains("magic byte is 1"));
        assert!(split_wire_format(&[0, 0, 1])
            .unwrap_err()
            .to_string()
            .contains("shorter"));
        let mut bytes = encode_with_id(1, &tx()).unwrap();
        bytes.truncate(bytes.len() - 3);
        let (id, body) = split_wire_format(&bytes).unwrap();
        assert!(decode_body::<Transaction>(&writer_for::<Transaction>(), id, body).is_err());
    }

    #[test]
    fn newer_writer_with_an_extra_optional_field_still_decodes() {
        // A producer that added `channel` (optional) writes; a consumer on the old schema reads.
        let newer = Transaction::SCHEMA_JSON.replacen(
            r#""fields": ["#,
            r#""fields": [{"name": "channel", "type": ["null", "string"], "default": null},"#,
            1,
        );
        let newer = Schema::parse_str(&newer).unwrap();
        let t = tx();
        let mut record = apache_avro::types::Record::new(&newer).unwrap();
        record.put(
            "channel",
            apache_avro::types::Value::Union(1, Box::new("app".into())),
        );
        let old = apache_avro::to_value(&t).unwrap();
        if let apache_avro::types::Value::Record(fields) = old {
            for (k, v) in fields {
                let v = match (k.as_str(), v) {
                    ("type", apache_avro::types::Value::String(s)) => {
                        let idx = TransactionType::ALL
                            .iter()
                            .position(|x| x.as_str() == s)
                            .unwrap();
                        apache_avro::types::Value::Enum(idx as u32, s)
                    }
                    ("event_time", apache_avro::types::Value::Long(l)) => {
                        apache_avro::types::Value::TimestampMillis(l)
                    }
                    (_, v) => v,
                };
                record.put(&k, v);
            }
        }
        let body = GenericDatumWriter::builder(&newer)
            .build()
            .unwrap()
            .write_value_to_vec(record)
            .unwrap();
        let writer = WriterSchema {
            fingerprint: crate::types::fingerprint_of(&newer),
            schema: newer,
        };
        let back: Transaction = decode_body(&writer, 9, &body).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn prediction_with_options_and_reasons_round_trips() {
        let p = crate::Prediction {
            transaction_id: "t".into(),
            name_orig: "C1".into(),
            tx_type: TransactionType::Transfer,
            amount: 1.5,
            event_time: 1,
            scored_at: 2,
            score: 0.97,
            is_alert: true,
            threshold: 0.5,
            model_name: "paysim".into(),
            model_version: 3,
            challenger_score: Some(0.4),
            challenger_version: None,
            top_reasons: vec![Reason {
                feature: "error_balance_orig".into(),
                contribution: 2.5,
            }],
            rule_hits: vec![crate::RuleHit {
                id: "big-transfer".into(),
                version: 2,
                action: crate::RuleAction::Alert,
            }],
            rules_version: 7,
        };
        let bytes = encode_with_id(5, &p).unwrap();
        let (id, body) = split_wire_format(&bytes).unwrap();
        let back: crate::Prediction =
            decode_body(&writer_for::<crate::Prediction>(), id, body).unwrap();
        assert_eq!(back, p);
    }
}
