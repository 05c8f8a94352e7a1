//! `pageSize` / `pageToken` / `nextPageToken` for list methods: keyset paging over ids, with
//! opaque tokens.

use base64::Engine;

use crate::error::{Error, Result};

/// One page request, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub size: usize,
    /// The last id of the previous page.
    pub after: Option<String>,
}

/// The default page size of list methods.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// The largest page size; larger requests are capped.
pub const MAX_PAGE_SIZE: usize = 100;

impl PageRequest {
    /// Validates `pageSize` (absent or 0: default; capped at the maximum) and decodes `pageToken`.
    pub fn new(page_size: Option<i64>, page_token: Option<&str>) -> Result<Self> {
        let size = match page_size {
            None | Some(0) => DEFAULT_PAGE_SIZE,
            Some(n) if n < 0 => return Err(Error::invalid("pageSize", "pageSize must not be negative.")),
            Some(n) => (n as usize).min(MAX_PAGE_SIZE),
        };
        let after = match page_token.filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => Some(decode(token).ok_or_else(|| {
                Error::invalid(
                    "pageToken",
                    "The page token is not valid; send back the nextPageToken of a previous response.",
                )
            })?),
        };
        Ok(Self { size, after })
    }

    /// How many rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> usize {
        self.size + 1
    }

    /// Trims `rows` to the page and returns the token of the next page, if any.
    pub fn finish<T>(&self, rows: &mut Vec<T>, id: impl Fn(&T) -> &str) -> Option<String> {
        if rows.len() <= self.size {
            return None;
        }
        rows.truncate(self.size);
        rows.last().map(|last| encode(id(last)))
    }
}

/// Reads rows in id order through `fetch(after, limit)`, keeps those `keep` accepts, and returns
/// one page of them with the token of the next. Reading goes on past rejected rows, so a filtered
/// page is as full as an unfiltered one.
pub async fn filtered_page<T, F, Fut>(
    page: &PageRequest,
    keep: impl Fn(&T) -> bool,
    id: impl Fn(&T) -> &str,
    fetch: F,
) -> Result<(Vec<T>, Option<String>)>
where
    F: Fn(Option<String>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>>>,
{
    const CHUNK: usize = 200;
    let mut kept = Vec::new();
    let mut after = page.after.clone();
    loop {
        let rows = fetch(after.clone(), CHUNK).await?;
        let exhausted = rows.len() < CHUNK;
        for row in rows {
            after = Some(id(&row).to_owned());
            if keep(&row) {
                kept.push(row);
                if kept.len() == page.fetch_limit() {
                    break;
                }
            }
        }
        if exhausted || kept.len() == page.fetch_limit() {
            break;
        }
    }
    let token = page.finish(&mut kept, id);
    Ok((kept, token))
}

fn encode(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

fn decode(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_cap_and_reject_negative() {
        assert_eq!(PageRequest::new(None, None).expect("default").size, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::new(Some(0), None).expect("zero").size, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::new(Some(1000), None).expect("cap").size, MAX_PAGE_SIZE);
        assert!(PageRequest::new(Some(-1), None).is_err());
        assert!(PageRequest::new(None, Some("%%%")).is_err());
    }

    #[test]
    fn tokens_round_trip_and_mark_the_last_page() {
        let page = PageRequest::new(Some(2), None).expect("page");
        let mut rows = vec!["a", "b", "c"];
        let token = page.finish(&mut rows, |r| r).expect("more pages");
        assert_eq!(rows, vec!["a", "b"]);
        assert_eq!(PageRequest::new(Some(2), Some(&token)).expect("next").after.as_deref(), Some("b"));
        let mut last = vec!["c"];
        assert_eq!(page.finish(&mut last, |r| r), None);
    }
}
