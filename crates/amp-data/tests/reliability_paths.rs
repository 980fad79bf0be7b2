//! Issue 13, item 4 for the data pipeline: image paths stay under the data root (`--image-folder`,
//! or the data file's directory) unless `--allow-outside-root`, and images are decoded before
//! anything is sent (docs/reliability.md).
mod common;

use amp_chat::mock::{MockReply, MockServer};
use mdpo::Turn;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn llava_with_image(dir: &Path, image: &str) -> PathBuf {
    let recs = serde_json::json!([{"id": "r0", "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A car."}]}]);
    write(dir, "llava.json", &recs.to_string())
}

#[test]
fn image_paths_escaping_the_data_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let secret = write(dir.path(), "secret.png", "");
    std::fs::write(&secret, common::TINY_PNG).unwrap();
    for image in ["../secret.png".to_string(), secret.display().to_string()] {
        let input = llava_with_image(&data, &image);
        let e = amp_data::load_llava(&input, None).expect_err("an escape must be refused").to_string();
        assert!(e.contains("llava.json") && e.contains("r0") && e.contains("image") && e.contains("outside"), "{e}");
        // ... unless the user says so
        let opts = amp_data::data::LoadOptions { allow_outside_root: true, ..Default::default() };
        assert_eq!(amp_data::data::load_llava_with(&input, &opts).unwrap().len(), 1);
    }
}

#[test]
fn a_file_that_is_not_an_image_is_refused_before_upload() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    // A text file with an image name (what `/etc/passwd` would look like) and a truncated PNG.
    write(&data, "images/passwd.png", "root:x:0:0:root:/root:/bin/bash\n");
    let e = amp_data::load_llava(&llava_with_image(&data, "images/passwd.png"), None).unwrap_err().to_string();
    assert!(e.contains("r0") && e.contains("image"), "{e}");
    std::fs::write(data.join("images/torn.png"), &common::TINY_PNG[..60]).unwrap();
    let input = llava_with_image(&data, "images/torn.png");
    // The header may pass at load time; the upload path decodes the whole image.
    let server = MockServer::start(|_| MockReply::completion("m", "a car")).unwrap();
    let client = amp_chat::ChatClient::new(amp_chat::ChatConfig::new(server.base_url(), "m")).unwrap();
    let generator = amp_data::OpenAiGenerator::new(client, "m", amp_data::GenParams::default());
    let torn = data.join("images/torn.png");
    let conv = vec![Turn { from: "human".into(), value: "<image>\nWhat?".into() }];
    let e = generator.request(&torn, &conv).expect_err("a truncated PNG must not be sent").to_string();
    assert!(e.contains("torn.png"), "{e}");
    assert_eq!(server.requests(), 0);
    let _ = input;
}
