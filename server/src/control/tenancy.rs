//! What a project may name beyond its own storage folders: places another project's jobs write
//! (a training job's `jobDir`, a batch job's `outputPath`) are claimed by that project when its
//! job is created, and no other project may then name them, anything inside them, or a folder or
//! prefix that holds them, in any URI field (`deploymentUri`, `packageUris`, `jobDir`,
//! `inputPaths`, `outputPath`, a batch job's model `uri`), local or `s3://`. The refusal reads
//! like one for a place outside the storage roots, so it does not tell whether the place exists.
//! (Places inside the storage root are per project already: see `storage::Storage::permits`.)

use super::Control;
use crate::error::{Error, Result};
use crate::names::ProjectId;
use crate::storage::Location;

/// How a place is recorded: a local path as it is (already canonical), an object URI without a
/// trailing slash.
fn place(location: &Location) -> String {
    location.to_string().trim_end_matches('/').to_owned()
}

impl Control {
    /// Refuses `location` (`uri` as the request gave it), read by `project` in `field`, when
    /// another project claimed it, a place inside it or a place holding it.
    pub(super) async fn refuse_foreign(
        &self,
        project: &ProjectId,
        field: &str,
        uri: &str,
        location: &Location,
    ) -> Result<()> {
        self.refuse_claimed(project, field, uri, location, "read").await
    }

    async fn refuse_claimed(
        &self,
        project: &ProjectId,
        field: &str,
        uri: &str,
        location: &Location,
        verb: &str,
    ) -> Result<()> {
        if self.store.foreign_claim(project.as_str(), &place(location)).await?.is_some() {
            // Word for word what a place outside the roots, or outside a bucket's prefixes, gets
            // (`storage::Storage`, `storage::Buckets::confine`).
            let message = match location {
                Location::Local(_) => format!("'{uri}' is outside the storage roots this server may {verb}"),
                Location::Object(object) => {
                    format!("'{uri}' is outside the prefixes of bucket {} this server may use", object.bucket)
                }
            };
            return Err(Error::invalid(field, message));
        }
        Ok(())
    }

    /// Claims `location`, where `project`'s new job writes, after checking no other project did
    /// (checked again after the claim: of two projects claiming one place at once, the later
    /// one, or both, are refused).
    pub(super) async fn claim_output(
        &self,
        project: &ProjectId,
        field: &str,
        uri: &str,
        location: &Location,
    ) -> Result<()> {
        self.refuse_claimed(project, field, uri, location, "write").await?;
        self.store.claim_place(project.as_str(), &place(location)).await?;
        self.refuse_claimed(project, field, uri, location, "write").await
    }
}
