//! Hand-written Avro binary encoding of the records on the hot path (transactions, predictions,
//! labels), for when the writer's schema is exactly ours.
//!
//! apache-avro's schema-aware serde walks the schema for every field of every record; at hundreds of
//! thousands of records per second that was about half of the scorer's per-record CPU. These
//! functions follow the field order of the `.avsc` files by hand. The tests check them against
//! apache-avro byte for byte, both ways, so a schema change that is not mirrored here fails them.

use crate::types::{
    Label, LabelSource, Prediction, Reason, RuleAction, RuleHit, Transaction, TransactionType,
};

/// Appends Avro primitives to a buffer.
pub(crate) struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }

    pub fn int(&mut self, v: i32) {
        self.long(v as i64)
    }

    pub fn double(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn boolean(&mut self, v: bool) {
        self.0.push(v as u8);
    }

    pub fn string(&mut self, v: &str) {
        self.long(v.len() as i64);
        self.0.extend_from_slice(v.as_bytes());
    }
}

/// Reads Avro primitives from a body; errors name the field and the byte offset.
pub(crate) struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    /// Where the value being read starts (for errors).
    start: usize,
}

impl<'a> Reader<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Reader {
            body,
            pos: 0,
            start: 0,
        }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.body[self.pos..]
    }

    fn fail(&self, field: &str, what: &str) -> String {
        format!("field {field} at byte {}: {what}", self.start)
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], String> {
        let left = self.body.len() - self.pos;
        if n > left {
            return Err(self.fail(
                field,
                &format!("needs {n} bytes, {left} left (truncated record)"),
            ));
        }
        let bytes = &self.body[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    pub fn long(&mut self, field: &str) -> Result<i64, String> {
        self.start = self.pos;
        let mut z = 0u64;
        // Straight over the slice: this runs for every int, long, length and index.
        for (i, &b) in self.body[self.pos..].iter().take(10).enumerate() {
            z |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        if self.body.len() - self.pos >= 10 {
            Err(self.fail(field, "varint longer than 10 bytes"))
        } else {
            Err(self.fail(field, "the varint runs past the end (truncated record)"))
        }
    }

    pub fn int(&mut self, field: &str) -> Result<i32, String> {
        let v = self.long(field)?;
        i32::try_from(v).map_err(|_| self.fail(field, &format!("{v} does not fit an int")))
    }

    pub fn double(&mut self, field: &str) -> Result<f64, String> {
        self.start = self.pos;
        let b = self.take(8, field)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn boolean(&mut self, field: &str) -> Result<bool, String> {
        self.start = self.pos;
        match self.take(1, field)? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(self.fail(field, &format!("boolean byte is {b}, expected 0 or 1"))),
            _ => unreachable!(),
        }
    }

    /// A length-prefixed count (string length, array block size): never negative.
    fn length(&mut self, field: &str) -> Result<usize, String> {
        let n = self.long(field)?;
        usize::try_from(n).map_err(|_| self.fail(field, &format!("negative length {n}")))
    }

    pub fn string(&mut self, field: &str) -> Result<String, String> {
        let n = self.length(field)?;
        let bytes = self.take(n, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| self.fail(field, &format!("not UTF-8: {e}")))
    }

    /// A union or enum index below `n`.
    pub fn index(&mut self, field: &str, n: usize) -> Result<usize, String> {
        let i = self.long(field)?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < n)
            .ok_or_else(|| self.fail(field, &format!("index {i} out of range 0..{n}")))
    }
}

/// A record type whose binary form is written here by hand.
pub(crate) trait Binary: Sized {
    fn write(&self, w: &mut Writer<'_>);
    fn read(r: &mut Reader<'_>) -> Result<Self, String>;
}

fn tx_type(r: &mut Reader<'_>, field: &str) -> Result<TransactionType, String> {
    Ok(TransactionType::ALL[r.index(field, TransactionType::ALL.len())?])
}

fn tx_type_index(t: TransactionType) -> i32 {
    TransactionType::ALL
        .iter()
        .position(|x| *x == t)
        .expect("every type is in ALL") as i32
}

fn rule_action(r: &mut Reader<'_>, field: &str) -> Result<RuleAction, String> {
    Ok(RuleAction::ALL[r.index(field, RuleAction::ALL.len())?])
}

fn rule_action_index(a: RuleAction) -> i32 {
    RuleAction::ALL
        .iter()
        .position(|x| *x == a)
        .expect("every action is in ALL") as i32
}

impl Binary for Transaction {
    fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.transaction_id);
        w.long(self.event_time);
        w.int(self.step);
        w.int(tx_type_index(self.tx_type));
        w.double(self.amount);
        w.string(&self.name_orig);
        w.double(self.oldbalance_org);
        w.double(self.newbalance_orig);
        w.string(&self.name_dest);
        w.double(self.oldbalance_dest);
        w.double(self.newbalance_dest);
        w.boolean(self.is_flagged_fraud);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, String> {
        Ok(Transaction {
            transaction_id: r.string("transaction_id")?,
            event_time: r.long("event_time")?,
            step: r.int("step")?,
            tx_type: tx_type(r, "type")?,
            amount: r.double("amount")?,
            name_orig: r.string("name_orig")?,
            oldbalance_org: r.double("oldbalance_org")?,
            newbalance_orig: r.double("newbalance_orig")?,
            name_dest: r.string("name_dest")?,
            oldbalance_dest: r.double("oldbalance_dest")?,
            newbalance_dest: r.double("newbalance_dest")?,
            is_flagged_fraud: r.boolean("is_flagged_fraud")?,
        })
    }
}

impl Binary for Label {
    fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.transaction_id);
        w.boolean(self.is_fraud);
        w.long(self.labelled_at);
        w.int(match self.source {
            LabelSource::File => 0,
            LabelSource::Analyst => 1,
        });
        w.string(&self.analyst);
        w.string(&self.note);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, String> {
        Ok(Label {
            transaction_id: r.string("transaction_id")?,
            is_fraud: r.boolean("is_fraud")?,
            labelled_at: r.long("labelled_at")?,
            source: LabelSource::ALL[r.index("source", LabelSource::ALL.len())?],
            analyst: r.string("analyst")?,
            note: r.string("note")?,
        })
    }
}

impl Binary for Prediction {
    fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.transaction_id);
        w.string(&self.name_orig);
        w.int(tx_type_index(self.tx_type));
        w.double(self.amount);
        w.long(self.event_time);
        w.long(self.scored_at);
        w.double(self.score);
        w.boolean(self.is_alert);
        w.double(self.threshold);
        w.string(&self.model_name);
        w.int(self.model_version);
        match self.challenger_score {
            None => w.long(0),
            Some(s) => {
                w.long(1);
                w.double(s);
            }
        }
        match self.challenger_version {
            None => w.long(0),
            Some(v) => {
                w.long(1);
                w.int(v);
            }
        }
        // One block with every item, then the empty block that ends the array.
        if !self.top_reasons.is_empty() {
            w.long(self.top_reasons.len() as i64);
            for reason in &self.top_reasons {
                w.string(&reason.feature);
                w.double(reason.contribution);
            }
        }
        w.long(0);
        if !self.rule_hits.is_empty() {
            w.long(self.rule_hits.len() as i64);
            for hit in &self.rule_hits {
                w.string(&hit.id);
                w.int(hit.version);
                w.int(rule_action_index(hit.action));
            }
        }
        w.long(0);
        w.long(self.rules_version);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, String> {
        let mut p = Prediction {
            transaction_id: r.string("transaction_id")?,
            name_orig: r.string("name_orig")?,
            tx_type: tx_type(r, "type")?,
            amount: r.double("amount")?,
            event_time: r.long("event_time")?,
            scored_at: r.long("scored_at")?,
            score: r.double("score")?,
            is_alert: r.boolean("is_alert")?,
            threshold: r.double("threshold")?,
            model_name: r.string("model_name")?,
            model_version: r.int("model_version")?,
            challenger_score: match r.index("challenger_score", 2)? {
                0 => None,
                _ => Some(r.double("challenger_score")?),
            },
            challenger_version: match r.index("challenger_version", 2)? {
                0 => None,
                _ => Some(r.int("challenger_version")?),
            },
            top_reasons: Vec::new(),
            rule_hits: Vec::new(),
            rules_version: 0,
        };
        loop {
            // A negative block count is followed by the block's size in bytes (Avro spec).
            let count = r.long("top_reasons")?;
            if count == 0 {
                break;
            }
            if count < 0 {
                r.long("top_reasons")?;
            }
            for _ in 0..count.unsigned_abs() {
                p.top_reasons.push(Reason {
                    feature: r.string("top_reasons.feature")?,
                    contribution: r.double("top_reasons.contribution")?,
                });
            }
        }
        loop {
            let count = r.long("rule_hits")?;
            if count == 0 {
                break;
            }
            if count < 0 {
                r.long("rule_hits")?;
            }
            for _ in 0..count.unsigned_abs() {
                p.rule_hits.push(RuleHit {
                    id: r.string("rule_hits.id")?,
                    version: r.int("rule_hits.version")?,
                    action: rule_action(r, "rule_hits.action")?,
                });
            }
        }
        p.rules_version = r.long("rules_version")?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::AvroRecord;
    use apache_avro::reader::datum::GenericDatumReader;
    use std::fmt::Debug;

    /// apache-avro's bytes for `v` (the reference implementation).
    fn reference<T: AvroRecord>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        T::datum_writer().write_ser(&mut out, v).unwrap();
        out
    }

    fn ours<T: Binary>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        v.write(&mut Writer(&mut out));
        out
    }

    /// Same bytes as apache-avro, and each side reads the other's bytes back to the same value.
    fn check<T: AvroRecord + Binary + PartialEq + Debug>(v: &T) {
        let reference_bytes = reference(v);
        assert_eq!(ours(v), reference_bytes, "bytes differ for {v:?}");
        let mut r = Reader::new(&reference_bytes);
        assert_eq!(&T::read(&mut r).unwrap(), v);
        assert!(r.rest().is_empty());
        let reader = GenericDatumReader::builder(T::schema())
            .human_readable(false)
            .build()
            .unwrap();
        let back: T = reader.read_deser(&mut &ours(v)[..]).unwrap();
        assert_eq!(&back, v);
        // Every truncation is an error that names a field, never a panic or a wrong value.
        for cut in 0..reference_bytes.len() {
            let err = T::read(&mut Reader::new(&reference_bytes[..cut])).unwrap_err();
            assert!(err.contains("truncated"), "{err}");
        }
    }

    /// A small deterministic generator (no extra dependency for the tests).
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn long(&mut self) -> i64 {
            // Mix small and extreme values: varints of every length.
            match self.next() % 4 {
                0 => (self.next() % 300) as i64 - 150,
                1 => self.next() as i64,
                2 => [i64::MIN, i64::MAX, -1, 0][(self.next() % 4) as usize],
                _ => (self.next() >> (self.next() % 64)) as i64,
            }
        }
        fn coin(&mut self) -> bool {
            self.next() & 1 == 0
        }
        fn int(&mut self) -> i32 {
            self.long() as i32
        }
        fn double(&mut self) -> f64 {
            match self.next() % 3 {
                0 => f64::from_bits(self.next() & !(0x7ffu64 << 52)) * self.long() as f64,
                1 => self.long() as f64 / (self.next() % 1000 + 1) as f64,
                _ => (self.next() % 100_000_000) as f64 / 100.0,
            }
        }
        fn string(&mut self) -> String {
            let words = [
                "",
                "C840083671",
                "M1979787155",
                "tx-é-€-😀",
                "a",
                &"x".repeat(200),
            ];
            words[(self.next() % words.len() as u64) as usize].to_string()
        }
        fn tx_type(&mut self) -> TransactionType {
            TransactionType::ALL[(self.next() % 5) as usize]
        }
    }

    #[test]
    fn transactions_match_apache_avro() {
        let mut g = Gen(0x9e3779b97f4a7c15);
        for _ in 0..500 {
            check(&Transaction {
                transaction_id: g.string(),
                event_time: g.long(),
                step: g.int(),
                tx_type: g.tx_type(),
                amount: g.double(),
                name_orig: g.string(),
                oldbalance_org: g.double(),
                newbalance_orig: g.double(),
                name_dest: g.string(),
                oldbalance_dest: g.double(),
                newbalance_dest: g.double(),
                is_flagged_fraud: g.coin(),
            });
        }
    }

    #[test]
    fn predictions_and_labels_match_apache_avro() {
        let mut g = Gen(42);
        for _ in 0..500 {
            let reasons = (0..g.next() % 4)
                .map(|_| Reason {
                    feature: g.string(),
                    contribution: g.double(),
                })
                .collect();
            check(&Prediction {
                transaction_id: g.string(),
                name_orig: g.string(),
                tx_type: g.tx_type(),
                amount: g.double(),
                event_time: g.long(),
                scored_at: g.long(),
                score: g.double(),
                is_alert: g.coin(),
                threshold: g.double(),
                model_name: g.string(),
                model_version: g.int(),
                challenger_score: (g.coin()).then(|| g.double()),
                challenger_version: (g.coin()).then(|| g.int()),
                top_reasons: reasons,
                rule_hits: (0..g.next() % 3)
                    .map(|_| RuleHit {
                        id: g.string(),
                        version: g.int(),
                        action: RuleAction::ALL[(g.next() % 3) as usize],
                    })
                    .collect(),
                rules_version: g.long(),
            });
            check(&Label {
                transaction_id: g.string(),
                is_fraud: g.coin(),
                labelled_at: g.long(),
                source: LabelSource::ALL[(g.next() % 2) as usize],
                analyst: g.string(),
                note: g.string(),
            });
        }
    }

    #[test]
    fn bad_bytes_are_named_errors() {
        let mut t = ours(&Label::from_file("t".into(), true, 5));
        t[2] = 7; // the boolean
        let err = Label::read(&mut Reader::new(&t)).unwrap_err();
        assert_eq!(
            err,
            "field is_fraud at byte 2: boolean byte is 7, expected 0 or 1"
        );
        // A string of negative length, an enum past its symbols, invalid UTF-8.
        let err = Label::read(&mut Reader::new(&[3])).unwrap_err();
        assert!(err.contains("negative length -2"), "{err}");
        let mut p = ours(&Transaction {
            transaction_id: "t".into(),
            event_time: 0,
            step: 1,
            tx_type: TransactionType::Debit,
            amount: 0.0,
            name_orig: "C1".into(),
            oldbalance_org: 0.0,
            newbalance_orig: 0.0,
            name_dest: "M1".into(),
            oldbalance_dest: 0.0,
            newbalance_dest: 0.0,
            is_flagged_fraud: false,
        });
        p[4] = 2 * 5; // type index 5 (zigzag)
        let err = Transaction::read(&mut Reader::new(&p)).unwrap_err();
        assert!(
            err.contains("field type") && err.contains("out of range 0..5"),
            "{err}"
        );
        p[4] = 0;
        p[15] = 0xff; // inside name_orig
        let err = Transaction::read(&mut Reader::new(&p)).unwrap_err();
        assert!(err.contains("name_orig") && err.contains("UTF-8"), "{err}");
        // A varint that never ends.
        let err = Reader::new(&[0xff; 11]).long("x").unwrap_err();
        assert!(err.contains("longer than 10 bytes"), "{err}");
    }
}
