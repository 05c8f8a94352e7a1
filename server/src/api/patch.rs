//! `updateMask` and `etag` of patch requests.

use base64::Engine;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The `updateMask` query parameter.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchQuery {
    pub update_mask: Option<String>,
}

/// Splits `updateMask` into paths, each of which must be in `allowed` (changed) or `accepted`
/// (recorded by ML Engine clients but meaningless on Anneal, so accepted and left alone).
pub fn mask_paths(mask: Option<&str>, allowed: &[&str], accepted: &[&str]) -> Result<Vec<String>> {
    let paths: Vec<String> =
        mask.unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
    if paths.is_empty() {
        return Err(Error::invalid(
            "updateMask",
            format!("An updateMask is required; it may name {}.", allowed.join(", ")),
        ));
    }
    if let Some(unknown) = paths.iter().find(|p| !allowed.contains(&p.as_str()) && !accepted.contains(&p.as_str())) {
        return Err(Error::invalid(
            "updateMask",
            format!("'{unknown}' cannot be updated; the mask may name {}.", allowed.join(", ")),
        ));
    }
    Ok(paths)
}

/// The revision an `etag` names (absent: no check).
pub fn revision(etag: Option<&str>) -> Result<Option<i64>> {
    let Some(etag) = etag.filter(|e| !e.is_empty()) else { return Ok(None) };
    let bytes = base64::engine::general_purpose::STANDARD.decode(etag).ok();
    match bytes.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()) {
        Some(bytes) => Ok(Some(i64::from_be_bytes(bytes))),
        None => Err(Error::invalid("etag", "The etag is not one this server issued; read the resource again.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_etags() {
        assert_eq!(
            mask_paths(Some("description, labels"), &["description", "labels"], &[]).expect("ok"),
            ["description", "labels"]
        );
        assert!(mask_paths(None, &["description"], &[]).is_err());
        assert!(mask_paths(Some("state"), &["description"], &[]).is_err());
        assert!(mask_paths(Some("autoScaling.minNodes"), &["description"], &["autoScaling.minNodes"]).is_ok());
        let etag = crate::api::resources::etag(42);
        assert_eq!(revision(Some(&etag)).expect("valid"), Some(42));
        assert!(revision(Some("nope")).is_err());
        assert_eq!(revision(None).expect("none"), None);
    }
}
