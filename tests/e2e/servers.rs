//! The test bed's data servers answer: a MongoDB-wire round trip (with the index
//! options the operator relies on) and a Redis PING.

use std::io::{Read, Write};

use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;

use crate::harness::{enabled, testbed_var};

#[tokio::test]
async fn mongodb_wire_server_round_trips_documents_and_index_options() {
    if !enabled() {
        return;
    }
    let uri = testbed_var("REFOP_TEST_MONGODB_URI");
    let client = mongodb::Client::with_uri_str(&uri).await.expect("connect");
    let db = client.database(&format!("e2e_{}", std::process::id()));
    let users = db.collection::<Document>("users");
    users.insert_one(doc! {"_id": 1, "referralCode": "ABC"}).await.expect("insert");
    let found = users.find_one(doc! {"referralCode": "ABC"}).await.expect("find").expect("the document");
    assert_eq!(found.get_i32("_id").unwrap(), 1);
    let index = IndexModel::builder()
        .keys(doc! {"referralCode": 1})
        .options(IndexOptions::builder().unique(true).sparse(true).build())
        .build();
    users.create_index(index).await.expect("createIndexes");
    let mut cursor = users.list_indexes().await.expect("listIndexes");
    let mut seen = None;
    while cursor.advance().await.unwrap() {
        let index = cursor.deserialize_current().unwrap();
        if index.keys == doc! {"referralCode": 1} {
            seen = Some(index.options.unwrap_or_default());
        }
    }
    let options = seen.expect("the created index is listed");
    assert_eq!(options.unique, Some(true));
    assert_eq!(options.sparse, Some(true));
    db.drop().await.expect("drop test database");
}

#[test]
fn redis_answers_ping() {
    if !enabled() {
        return;
    }
    let url = testbed_var("REFOP_TEST_REDIS_URL");
    let address = url.trim_start_matches("redis://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).expect("connect to Redis");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");
}
