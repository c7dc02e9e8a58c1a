//! The ledger of delivered ext_ids (sled): a redelivered event already accepted by CoMagic is acked
//! without a second upload. An entry is fsynced before the message is acked, so a kill -9 between
//! CoMagic's answer and the ack costs no duplicate.

use std::path::Path;

pub struct Ledger {
    db: sled::Db,
}

impl Ledger {
    pub fn open(dir: &Path) -> Result<Self, sled::Error> {
        Ok(Ledger { db: sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).open()? })
    }

    pub fn contains(&self, ext_id: &str) -> bool {
        // A read error is treated as "not delivered": the worst case is a duplicate upload, which
        // CoMagic answers with duplicate_entity.
        self.db.contains_key(ext_id).unwrap_or(false)
    }

    /// Records ext_ids as delivered and fsyncs them.
    pub async fn record<'a>(&self, ext_ids: impl IntoIterator<Item = &'a str>) -> Result<(), sled::Error> {
        let now = chrono::Utc::now().timestamp_millis().to_be_bytes();
        let mut batch = sled::Batch::default();
        for id in ext_ids {
            batch.insert(id, &now);
        }
        self.db.apply_batch(batch)?;
        // sled's flush_async misses wake-ups under concurrent callers (sled#1241): flush on the
        // blocking pool instead.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush()).await.expect("a flush does not panic")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recorded_ids_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = Ledger::open(dir.path()).unwrap();
            assert!(!ledger.contains("vb-1"));
            ledger.record(["vb-1", "vb-2"]).await.unwrap();
            assert!(ledger.contains("vb-1"));
        }
        let reopened = Ledger::open(dir.path()).unwrap();
        assert!(reopened.contains("vb-2") && !reopened.contains("vb-3"));
    }
}
