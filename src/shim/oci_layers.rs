//! WebAssembly OCI artifacts: the module of a container whose image has `wasm` as its
//! architecture comes from the image's wasm layer in containerd's content store, not from a
//! rootfs file. Each layer is checked against its descriptor's digest when read.

use anyhow::{bail, Context, Result};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Request;
use containerd_client::with_namespace;
use futures::TryStreamExt;
use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// Layer media types that hold a module (the ones wasm OCI artifacts use).
const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];

/// A wasm layer of the container's image.
pub struct OciModule {
    pub digest: String,
    pub bytes: Vec<u8>,
}

/// The wasm layers of container `id`'s image; empty for an ordinary (rootfs) image.
pub async fn wasm_layers(
    address: &str,
    namespace: &str,
    id: &str,
    max_bytes: u64,
) -> Result<Vec<OciModule>> {
    static CHANNEL: OnceCell<Channel> = OnceCell::const_new();
    let channel = CHANNEL
        .get_or_try_init(|| containerd_client::connect(address))
        .await
        .with_context(|| format!("connecting to containerd at {address}"))?
        .clone();
    let store = Store {
        channel,
        namespace: namespace.to_string(),
    };
    let container = ContainersClient::new(store.channel.clone())
        .get(with_namespace!(
            GetContainerRequest { id: id.to_string() },
            store.namespace
        ))
        .await?
        .into_inner()
        .container
        .context("containerd returned no container")?;
    if container.image.is_empty() {
        return Ok(vec![]);
    }
    let image = ImagesClient::new(store.channel.clone())
        .get(with_namespace!(
            GetImageRequest {
                name: container.image.clone()
            },
            store.namespace
        ))
        .await?
        .into_inner()
        .image
        .context("containerd returned no image")?;
    let target = image.target.context("image without target")?;
    let mut manifest_digest = target.digest;
    if target.media_type.contains("index") || target.media_type.contains("manifest.list") {
        let index =
            ImageIndex::from_reader(store.read(&manifest_digest, 4 << 20).await?.as_slice())?;
        let Some(wasm) = index.manifests().iter().find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| *p.architecture() == Arch::Wasm)
        }) else {
            return Ok(vec![]);
        };
        manifest_digest = wasm.digest().to_string();
    }
    let manifest =
        ImageManifest::from_reader(store.read(&manifest_digest, 4 << 20).await?.as_slice())?;
    let config = ImageConfiguration::from_reader(
        store
            .read_descriptor(manifest.config(), 4 << 20)
            .await?
            .as_slice(),
    )?;
    if *config.architecture() != Arch::Wasm {
        return Ok(vec![]);
    }
    let mut modules = vec![];
    for layer in manifest
        .layers()
        .iter()
        .filter(|l| is_wasm_layer(l.media_type()))
    {
        let bytes = store.read_descriptor(layer, max_bytes).await?;
        modules.push(OciModule {
            digest: layer.digest().to_string(),
            bytes,
        });
    }
    Ok(modules)
}

fn is_wasm_layer(media_type: &MediaType) -> bool {
    WASM_LAYER_TYPES.contains(&media_type.to_string().as_str())
}

struct Store {
    channel: Channel,
    namespace: String,
}

impl Store {
    async fn read(&self, digest: &str, max_bytes: u64) -> Result<Vec<u8>> {
        let request = with_namespace!(
            ReadContentRequest {
                digest: digest.to_string(),
                ..Default::default()
            },
            self.namespace
        );
        let mut stream = ContentClient::new(self.channel.clone())
            .read(request)
            .await?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.try_next().await? {
            bytes.extend_from_slice(&chunk.data);
            if bytes.len() as u64 > max_bytes {
                bail!("content {digest} is larger than {max_bytes} bytes");
            }
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if digest.starts_with("sha256:") && actual != digest {
            bail!("content {digest} does not match its digest (read {actual})");
        }
        Ok(bytes)
    }

    async fn read_descriptor(&self, descriptor: &Descriptor, max_bytes: u64) -> Result<Vec<u8>> {
        self.read(descriptor.digest().as_ref(), max_bytes).await
    }
}
