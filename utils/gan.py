"""Generative adversarial networks for chapter 5: DCGAN builders, a GAN training step, and GAN metrics.

* :func:`build_generator` and :func:`build_discriminator` are a small DCGAN
  (Radford, Metz & Chintala, 2015) for 28×28 single-channel images, optionally
  class-conditional (Mirza & Osindero, 2014).  The generator ends in ``tanh``
  (images in [-1, 1]); the discriminator ends in a **logit** (no activation),
  which :func:`gan_losses` turns into probabilities through binary
  cross-entropy *from logits*.  ``head="tanh"`` builds the source text's
  (wrong) discriminator, for the demonstrations of the chapter only.
* :class:`GAN` is a ``keras.Model`` whose ``train_step`` alternates one
  discriminator and one generator update, so that ``gan.fit(x)`` (or
  ``gan.fit(x, labels)`` for a conditional GAN) trains it with Keras' callbacks.
  **Backends:** the training step uses ``tf.GradientTape`` and therefore runs on
  the **TensorFlow backend only**; on JAX or PyTorch :meth:`GAN.train_step`
  raises ``NotImplementedError`` (a port would follow the keras-io DCGAN
  examples: ``jax.value_and_grad`` over ``stateless_call``, or
  ``torch.autograd``).  Everything else in this module (builders, sampling,
  metrics) is backend-agnostic Keras 3 / NumPy.
* :func:`frechet_distance`, :func:`precision_recall` (k-NN manifolds,
  Kynkäänniemi et al., 2019) and :func:`nearest_distances` (memorisation) work
  on NumPy feature arrays from any feature extractor, e.g.
  :func:`penultimate_features` of a chapter 2 classifier.  :func:`sqrtm_real`
  warns (:class:`FrechetWarning`) when a matrix square root has a large
  imaginary part instead of dropping it silently.
* :func:`repeated_comparison` repeats FD and precision/recall over random,
  class-matched halves of a real set (:func:`stratified_halves`,
  :func:`matched_subset`): the other half is the real-vs-real floor at the same
  sample size and class mix, and the draws give intervals and paired differences.
"""

from __future__ import annotations

import time
import warnings
import zlib
from collections.abc import Sequence

import keras
import numpy as np

# ---------------------------------------------------------------------------
# scaling between the classifier's [0, 1] and the generator's [-1, 1]
# ---------------------------------------------------------------------------


def to_tanh_range(x: np.ndarray) -> np.ndarray:
    """Images in [0, 1] (float) or uint8 [0, 255] as float32 in [-1, 1], with a channel axis."""
    from .classify import as_float_images

    return (as_float_images(x) * 2.0 - 1.0).astype("float32")


def to_unit_range(x) -> np.ndarray:
    """Generator output in [-1, 1] as float32 images in [0, 1] (clipped)."""
    x = keras.ops.convert_to_numpy(x) if not isinstance(x, np.ndarray) else x
    return np.clip((x.astype("float32") + 1.0) / 2.0, 0.0, 1.0)


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------


def build_generator(latent_dim: int = 64, *, n_classes: int = 0, width: int = 32, name: str = "generator"):
    """DCGAN generator for 28×28×1 images in [-1, 1].

    z (``latent_dim``) [+ one-hot label] → Dense 7·7·(2·width) → BN → ReLU →
    ConvTranspose(width, 4×4, stride 2) → BN → ReLU (14×14) →
    ConvTranspose(width/2, 4×4, stride 2) → BN → ReLU (28×28) → Conv 3×3 → ``tanh``.
    With ``n_classes > 0`` the model takes ``[z, onehot]`` and is class-conditional.
    """
    from keras import layers

    if int(latent_dim) < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim!r}")
    if int(width) < 2:
        raise ValueError(f"width must be >= 2, got {width!r}")
    z_in = keras.Input((int(latent_dim),), name="z")
    inputs, h = [z_in], z_in
    if n_classes:
        y_in = keras.Input((int(n_classes),), name="label_onehot")
        inputs.append(y_in)
        h = layers.Concatenate()([z_in, y_in])
    h = layers.Dense(7 * 7 * 2 * width, use_bias=False)(h)
    h = layers.BatchNormalization(momentum=0.9)(h)
    h = layers.ReLU()(h)
    h = layers.Reshape((7, 7, 2 * width))(h)
    for filters in (width, max(width // 2, 1)):
        h = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization(momentum=0.9)(h)
        h = layers.ReLU()(h)
    out = layers.Conv2D(1, 3, padding="same", activation="tanh", name="image")(h)
    return keras.Model(inputs if n_classes else z_in, out, name=name)


def build_discriminator(
    *, n_classes: int = 0, width: int = 32, dropout: float = 0.3, head: str = "logit", name: str = "discriminator"
):
    """DCGAN discriminator for 28×28×1 images in [-1, 1]; returns one score per image.

    Conv(width, 4×4, stride 2) → LeakyReLU(0.2) (14×14) → Conv(2·width, 4×4,
    stride 2) → LeakyReLU(0.2) (7×7) → Flatten → Dropout → Dense(1).  With
    ``n_classes > 0`` the model takes ``[image, onehot]``: the label is mapped to
    a 28×28 plane and stacked onto the image as a second channel.

    ``head="logit"`` (the correct choice) leaves the last layer linear: its
    output is a logit ``l`` and D(x) = sigmoid(l).  ``head="sigmoid"`` outputs the
    probability itself.  ``head="tanh"`` reproduces the source text's
    D(x) = tanh(W x + b), whose values in (-1, 1) are *not* probabilities; it
    exists only to show why that formula fails.
    """
    from keras import layers

    heads = {"logit": None, "sigmoid": "sigmoid", "tanh": "tanh"}
    if head not in heads:
        raise ValueError(f"head must be one of {sorted(heads)}, got {head!r}")
    x_in = keras.Input((28, 28, 1), name="image")
    inputs, h = [x_in], x_in
    if n_classes:
        y_in = keras.Input((int(n_classes),), name="label_onehot")
        inputs.append(y_in)
        plane = layers.Reshape((28, 28, 1))(layers.Dense(28 * 28)(y_in))
        h = layers.Concatenate()([x_in, plane])
    h = layers.Conv2D(width, 4, strides=2, padding="same")(h)
    h = layers.LeakyReLU(0.2)(h)
    h = layers.Conv2D(2 * width, 4, strides=2, padding="same")(h)
    h = layers.LeakyReLU(0.2)(h)
    h = layers.Flatten()(h)
    if dropout:
        h = layers.Dropout(dropout)(h)
    out = layers.Dense(1, activation=heads[head], name=head)(h)
    return keras.Model(inputs if n_classes else x_in, out, name=name)


# ---------------------------------------------------------------------------
# the GAN objective
# ---------------------------------------------------------------------------

_BCE = None


def _bce():
    global _BCE
    if _BCE is None:
        _BCE = keras.losses.BinaryCrossentropy(from_logits=True)
    return _BCE


def gan_losses(real_logits, fake_logits, *, generator_loss: str = "non_saturating"):
    """Discriminator and generator losses of Goodfellow et al. (2014) from discriminator **logits**.

    With D = sigmoid(logit) and batch means,

    * discriminator: ``L_D = -[mean log D(x) + mean log(1 - D(G(z)))]`` (minus the value V),
      = BCE(1, real_logits) + BCE(0, fake_logits);
    * generator, ``"non_saturating"``: ``L_G = -mean log D(G(z))`` = BCE(1, fake_logits);
    * generator, ``"minimax"``: ``L_G = mean log(1 - D(G(z)))`` = -BCE(0, fake_logits)
      (the original minimax game; its gradient vanishes when D rejects the fakes).

    Returns ``(d_loss, g_loss)`` as backend tensors.
    """
    if generator_loss not in ("non_saturating", "minimax"):
        raise ValueError(f"generator_loss must be 'non_saturating' or 'minimax', got {generator_loss!r}")
    ops = keras.ops
    bce = _bce()
    ones, zeros = ops.ones_like(real_logits), ops.zeros_like(fake_logits)
    d_loss = bce(ones, real_logits) + bce(zeros, fake_logits)
    if generator_loss == "non_saturating":
        g_loss = bce(ops.ones_like(fake_logits), fake_logits)
    else:
        g_loss = -bce(zeros, fake_logits)
    return d_loss, g_loss


def minimax_terms(real_logits: np.ndarray, fake_logits: np.ndarray) -> dict[str, float]:
    """The GAN objective's terms written out in NumPy (float64) from logits.

    Returns ``mean_log_D_real`` = mean log σ(l_real), ``mean_log_1m_D_fake`` =
    mean log(1 − σ(l_fake)), the value ``V`` (their sum) and the non-saturating
    generator loss ``-mean log σ(l_fake)``.  Stable forms: log σ(l) = −softplus(−l),
    log(1 − σ(l)) = −softplus(l).
    """
    lr = np.asarray(real_logits, "float64").ravel()
    lf = np.asarray(fake_logits, "float64").ravel()
    softplus = lambda t: np.logaddexp(0.0, t)  # noqa: E731
    a = float(np.mean(-softplus(-lr)))
    b = float(np.mean(-softplus(lf)))
    return {
        "mean_log_D_real": a,
        "mean_log_1m_D_fake": b,
        "V": a + b,
        "g_non_saturating": float(np.mean(softplus(-lf))),
    }


# ---------------------------------------------------------------------------
# the GAN model (one training step per backend)
# ---------------------------------------------------------------------------


class GAN(keras.Model):
    """A generator and a discriminator trained against each other with ``fit``.

    ``fit(x)`` trains an unconditional GAN on images ``x`` in [-1, 1]; a
    conditional GAN (``n_classes > 0``) is trained with ``fit(x, labels)``
    (integer labels).  Each step draws z ~ N(0, I) from a seeded
    :class:`keras.random.SeedGenerator`, updates the discriminator once on a real
    and a fake batch, then the generator once on a fresh fake batch.
    The discriminator's output always goes into the loss as a logit.  With a
    tanh head (``build_discriminator(head="tanh")``, the source's formula) it is
    therefore treated *as if it were a logit*: the only way that formula trains
    without NaNs, and it caps |logit| at 1, so D can never be more than
    σ(1) ≈ 73 % sure.

    **Backends.** :meth:`train_step` is written once per backend, following the
    keras-io guides "Customizing what happens in ``fit()``" for each of them, and
    the three compute the same update:

    * **TensorFlow**: two ``tf.GradientTape`` blocks and ``optimizer.apply_gradients``;
    * **JAX**: a pure function of the training state, jitted once: ``jax.value_and_grad``
      over ``stateless_call`` of each network, ``optimizer.stateless_apply`` for each
      optimiser, ``stateless_update_state`` for the metrics, and the noise drawn inside a
      :class:`keras.StatelessScope` so that the seed generator's state is threaded through.
      Keras' JAX trainer carries only ``model.optimizer``'s variables in its state, so the
      two optimisers' variables are read before and written back after each step, and
      ``compile`` sets ``jit_compile=False`` for Keras' outer step (the inner step is
      jitted; ``compile(run_eagerly=True)`` runs it un-jitted, for debugging);
    * **PyTorch**: ``zero_grad``, ``backward`` and ``optimizer.apply`` under ``torch.no_grad``.

    The random streams differ between backends (each has its own generator), so two
    backends give different runs for the same seed; with the same noise and weights,
    one step gives the same numbers on all three (a unit test checks this).
    """

    def __init__(
        self,
        generator,
        discriminator,
        latent_dim: int,
        *,
        n_classes: int = 0,
        seed: int = 0,
        generator_loss: str = "non_saturating",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.n_classes = int(n_classes)
        self.generator_loss = generator_loss
        self.seed_generator = keras.random.SeedGenerator(int(seed))
        gan_losses(np.zeros((1, 1), "float32"), np.zeros((1, 1), "float32"), generator_loss=generator_loss)
        self.trackers = {k: keras.metrics.Mean(name=k) for k in ("d_loss", "g_loss", "d_real", "d_fake")}
        self._jax_step = None
        # Both networks are built (functional models), so the GAN is too: without this, the JAX and PyTorch
        # trainers would try to build it by calling it on a batch of real images.
        self.built = True

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        """Set the two optimisers (one per network).

        On JAX both are built here (their variables must exist before the jitted step is
        traced), and Keras' own jit of the step is switched off (see the class docstring).
        """
        if keras.backend.backend() == "jax":
            self._jax_jit = not kwargs.get("run_eagerly", False) and kwargs.get("jit_compile", "auto") is not False
            kwargs["jit_compile"] = False
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self._jax_step = None
        if keras.backend.backend() == "jax":
            d_optimizer.build(self.discriminator.trainable_variables)
            g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self):
        """The four running means (``d_loss``, ``g_loss``, ``d_real``, ``d_fake``), reset each epoch by ``fit``."""
        return list(self.trackers.values())

    def _inputs(self, main, onehot):
        return [main, onehot] if self.n_classes else main

    def call(self, z, training=False):
        """Generate images from ``z`` (or ``[z, onehot]`` for a conditional GAN)."""
        return self.generator(z, training=training)

    def _unpack(self, data):
        """``(real images, one-hot labels or None)`` from a batch of ``fit``."""
        ops = keras.ops
        if isinstance(data, (tuple, list)):
            real, labels = data[0], data[1] if len(data) > 1 else None
        else:
            real, labels = data, None
        if self.n_classes and labels is None:
            raise ValueError("a conditional GAN (n_classes > 0) needs labels: call fit(x, labels)")
        onehot = ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), self.n_classes) if self.n_classes else None
        return real, onehot

    def draw_latent(self, batch):
        """``batch`` noise vectors z ~ N(0, I) from the model's seeded generator (one draw per call)."""
        return keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)

    def train_step(self, *args):
        """One discriminator update and one generator update (TensorFlow, JAX or PyTorch backend).

        On JAX, Keras calls ``train_step(state, data)`` and expects ``(logs, state)``; on the
        other backends ``train_step(data)`` returns the logs.
        """
        name = keras.backend.backend()
        if name == "tensorflow":
            return self._train_step_tensorflow(*args)
        if name == "jax":
            return self._train_step_jax(*args)
        if name == "torch":
            return self._train_step_torch(*args)
        raise NotImplementedError(
            f"utils.gan.GAN.train_step supports the tensorflow, jax and torch backends, not {name!r}"
        )

    def _logs(self, d_loss, g_loss):
        logs = {k: m.result() for k, m in self.trackers.items()}  # means over the epoch so far
        logs.update(d_loss_step=d_loss, g_loss_step=g_loss)  # this step's values (for StepHistory)
        return logs

    def _update_trackers(self, d_loss, g_loss, real_logits, fake_logits):
        ops = keras.ops
        self.trackers["d_loss"].update_state(d_loss)
        self.trackers["g_loss"].update_state(g_loss)
        self.trackers["d_real"].update_state(ops.mean(ops.sigmoid(real_logits)))
        self.trackers["d_fake"].update_state(ops.mean(ops.sigmoid(fake_logits)))

    # --- TensorFlow: tf.GradientTape -------------------------------------------------------------------------

    def _train_step_tensorflow(self, data):
        import tensorflow as tf

        ops = keras.ops
        real, onehot = self._unpack(data)
        batch = ops.shape(real)[0]

        z = self.draw_latent(batch)
        fake = self.generator(self._inputs(z, onehot), training=True)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(self._inputs(real, onehot), training=True)
            fake_logits = self.discriminator(self._inputs(fake, onehot), training=True)
            d_loss, _ = gan_losses(real_logits, fake_logits, generator_loss=self.generator_loss)
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))

        z = self.draw_latent(batch)
        with tf.GradientTape() as tape:
            fake = self.generator(self._inputs(z, onehot), training=True)
            fake_logits2 = self.discriminator(self._inputs(fake, onehot), training=True)
            _, g_loss = gan_losses(real_logits, fake_logits2, generator_loss=self.generator_loss)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))

        self._update_trackers(d_loss, g_loss, real_logits, fake_logits)
        return self._logs(d_loss, g_loss)

    # --- PyTorch: zero_grad, backward, optimizer.apply ---------------------------------------------------------

    def _train_step_torch(self, data):
        import torch

        real, onehot = self._unpack(data)
        batch = keras.ops.shape(real)[0]
        d_weights, g_weights = self.discriminator.trainable_weights, self.generator.trainable_weights

        z = self.draw_latent(batch)
        with torch.no_grad():  # the fakes are constants of the discriminator's loss (as outside TF's tape)
            fake = self.generator(self._inputs(z, onehot), training=True)
        self.zero_grad()
        real_logits = self.discriminator(self._inputs(real, onehot), training=True)
        fake_logits = self.discriminator(self._inputs(fake, onehot), training=True)
        d_loss, _ = gan_losses(real_logits, fake_logits, generator_loss=self.generator_loss)
        d_loss.backward()
        grads = [v.value.grad for v in d_weights]
        with torch.no_grad():
            self.d_optimizer.apply(grads, d_weights)

        z = self.draw_latent(batch)
        self.zero_grad()
        fake = self.generator(self._inputs(z, onehot), training=True)
        fake_logits2 = self.discriminator(self._inputs(fake, onehot), training=True)
        _, g_loss = gan_losses(real_logits.detach(), fake_logits2, generator_loss=self.generator_loss)
        g_loss.backward()
        grads = [v.value.grad for v in g_weights]
        with torch.no_grad():
            self.g_optimizer.apply(grads, g_weights)
        self.zero_grad()  # no gradient left on the discriminator's weights from the generator's loss

        d_loss, g_loss = d_loss.detach(), g_loss.detach()
        self._update_trackers(d_loss, g_loss, real_logits.detach(), fake_logits.detach())
        return self._logs(d_loss, g_loss)

    # --- JAX: a pure, jitted function of the state ------------------------------------------------------------

    def _train_step_jax(self, state, data):
        import jax

        trainable, non_trainable, optimizer_vars, metrics_vars = state
        real, onehot = self._unpack(data)
        if self._jax_step is None:
            jit = getattr(self, "_jax_jit", True)
            self._jax_step = jax.jit(self._jax_pure_step) if jit else self._jax_pure_step
        d_opt = [v.value for v in self.d_optimizer.variables]
        g_opt = [v.value for v in self.g_optimizer.variables]
        trainable, non_trainable, d_opt, g_opt, metrics_vars, logs = self._jax_step(
            list(trainable), list(non_trainable), d_opt, g_opt, list(metrics_vars), real, onehot
        )
        for v, value in zip(self.d_optimizer.variables, d_opt):
            v.assign(value)
        for v, value in zip(self.g_optimizer.variables, g_opt):
            v.assign(value)
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)

    def _jax_pure_step(self, trainable, non_trainable, d_opt, g_opt, metrics_vars, real, onehot):
        """The JAX step as a pure function: (state, batch) → (new state, logs); no Keras variable is touched."""
        import jax

        ops = keras.ops
        gen, disc = self.generator, self.discriminator
        t_pos = {id(v): i for i, v in enumerate(self.trainable_variables)}
        n_pos = {id(v): i for i, v in enumerate(self.non_trainable_variables)}
        pick_t = lambda model, values: [values[t_pos[id(v)]] for v in model.trainable_variables]  # noqa: E731
        pick_n = lambda model, values: [values[n_pos[id(v)]] for v in model.non_trainable_variables]  # noqa: E731
        g_t, g_n = pick_t(gen, trainable), pick_n(gen, non_trainable)
        d_t, d_n = pick_t(disc, trainable), pick_n(disc, non_trainable)
        seed_state = non_trainable[n_pos[id(self.seed_generator.state)]]
        batch = real.shape[0]

        def draw(seed_state):
            with keras.StatelessScope(state_mapping=[(self.seed_generator.state, seed_state)]) as scope:
                z = self.draw_latent(batch)
            return z, scope.get_current_value(self.seed_generator.state)

        def d_loss_fn(d_t, d_n, fake):
            real_logits, d_n = disc.stateless_call(d_t, d_n, self._inputs(real, onehot), training=True)
            fake_logits, d_n = disc.stateless_call(d_t, d_n, self._inputs(fake, onehot), training=True)
            d_loss, _ = gan_losses(real_logits, fake_logits, generator_loss=self.generator_loss)
            return d_loss, (real_logits, fake_logits, d_n)

        def g_loss_fn(g_t, g_n, d_n, z, real_logits):
            fake, g_n = gen.stateless_call(g_t, g_n, self._inputs(z, onehot), training=True)
            fake_logits2, d_n = disc.stateless_call(d_t, d_n, self._inputs(fake, onehot), training=True)
            _, g_loss = gan_losses(real_logits, fake_logits2, generator_loss=self.generator_loss)
            return g_loss, (g_n, d_n)

        z, seed_state = draw(seed_state)
        fake, g_n = gen.stateless_call(g_t, g_n, self._inputs(z, onehot), training=True)
        (d_loss, (real_logits, fake_logits, d_n)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_t, d_n, fake)
        d_t, d_opt = self.d_optimizer.stateless_apply(d_opt, grads, d_t)

        z, seed_state = draw(seed_state)
        (g_loss, (g_n, d_n)), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g_t, g_n, d_n, z, real_logits)
        g_t, g_opt = self.g_optimizer.stateless_apply(g_opt, grads, g_t)

        for model, t_new, n_new in ((gen, g_t, g_n), (disc, d_t, d_n)):
            for v, value in zip(model.trainable_variables, t_new):
                trainable[t_pos[id(v)]] = value
            for v, value in zip(model.non_trainable_variables, n_new):
                non_trainable[n_pos[id(v)]] = value
        non_trainable[n_pos[id(self.seed_generator.state)]] = seed_state

        values = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": ops.mean(ops.sigmoid(real_logits)),
            "d_fake": ops.mean(ops.sigmoid(fake_logits)),
        }
        new_metrics, logs, start = [], {}, 0
        for name, metric in self.trackers.items():
            own = metrics_vars[start : start + len(metric.variables)]
            start += len(metric.variables)
            own = metric.stateless_update_state(own, values[name])
            logs[name] = metric.stateless_result(own)
            new_metrics += list(own)
        logs.update(d_loss_step=d_loss, g_loss_step=g_loss)
        return trainable, non_trainable, d_opt, g_opt, new_metrics, logs


def make_gan(
    *,
    latent_dim: int = 64,
    n_classes: int = 0,
    width: int = 32,
    d_head: str = "logit",
    d_lr: float = 2e-4,
    g_lr: float = 2e-4,
    beta_1: float = 0.5,
    seed: int = 0,
    generator_loss: str = "non_saturating",
    dropout: float = 0.3,
) -> GAN:
    """Build and compile a :class:`GAN` with the DCGAN recipe (Adam, β1 = 0.5, learning rate 2·10⁻⁴).

    Seeds Keras with ``seed`` before building, so the initial weights and the
    noise stream are reproducible.
    """
    for name, lr in (("d_lr", d_lr), ("g_lr", g_lr)):
        if not lr > 0:
            raise ValueError(f"{name} must be > 0, got {lr!r}")
    keras.utils.set_random_seed(int(seed))
    g = build_generator(latent_dim, n_classes=n_classes, width=width)
    d = build_discriminator(n_classes=n_classes, width=width, head=d_head, dropout=dropout)
    gan = GAN(g, d, latent_dim, n_classes=n_classes, seed=seed, generator_loss=generator_loss)
    gan.compile(
        d_optimizer=keras.optimizers.Adam(d_lr, beta_1=beta_1), g_optimizer=keras.optimizers.Adam(g_lr, beta_1=beta_1)
    )
    return gan


def sample(
    generator,
    n: int,
    latent_dim: int,
    *,
    labels: Sequence[int] | None = None,
    n_classes: int = 0,
    seed: int = 0,
    batch_size: int = 512,
) -> np.ndarray:
    """``n`` generated images in [0, 1] (N, 28, 28, 1) from seeded noise (and ``labels`` if conditional)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((int(n), int(latent_dim))).astype("float32")
    if n_classes:
        if labels is None:
            raise ValueError("a conditional generator needs labels: pass labels=[...] (one per sample)")
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries, expected n = {n}")
        onehot = np.eye(n_classes, dtype="float32")[labels]
        out = generator.predict([z, onehot], batch_size=batch_size, verbose=0)
    else:
        out = generator.predict(z, batch_size=batch_size, verbose=0)
    return to_unit_range(np.asarray(out))


class Snapshots(keras.callbacks.Callback):
    """Keras callback for :class:`GAN`: every ``every`` epochs, keep fixed-noise samples and a score.

    ``z`` (and ``onehot``) are fixed inputs of the generator, so the grid shows the
    *same* latent points over training.  ``score`` (optional) maps a batch of
    generated images in [0, 1] to a number (e.g. a Fréchet distance), computed on
    ``sample_fn()``'s output.  Results: ``epochs``, ``images``, ``scores``, and
    ``seconds`` (wall time spent in the callback, to subtract from training time).
    """

    def __init__(self, z, onehot=None, *, every: int = 1, score=None, sample_fn=None, at_start: bool = True):
        super().__init__()
        self.z, self.onehot, self.every = z, onehot, max(int(every), 1)
        self.score, self.sample_fn, self.at_start = score, sample_fn, at_start
        self.epochs: list[int] = []
        self.images: list[np.ndarray] = []
        self.scores: list[float] = []
        self.seconds = 0.0

    def _snap(self, epoch):
        t0 = time.perf_counter()
        g = self.model.generator
        inp = [self.z, self.onehot] if self.onehot is not None else self.z
        self.images.append(to_unit_range(keras.ops.convert_to_numpy(g(inp, training=False))))
        self.epochs.append(epoch)
        if self.score is not None:
            self.scores.append(float(self.score(self.sample_fn())))
        self.seconds += time.perf_counter() - t0

    def on_train_begin(self, logs=None):
        if self.at_start:
            self._snap(0)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.params.get("epochs"):
            self._snap(epoch + 1)


class StepHistory(keras.callbacks.Callback):
    """Keras callback: record the per-step losses ``d_loss_step`` and ``g_loss_step`` of a :class:`GAN`.

    ``fit``'s history holds epoch means, which hide oscillations; ``self.d`` and
    ``self.g`` hold one value per training step.
    """

    def __init__(self):
        super().__init__()
        self.d: list[float] = []
        self.g: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        if "d_loss_step" in logs:
            self.d.append(float(logs["d_loss_step"]))
            self.g.append(float(logs["g_loss_step"]))


# ---------------------------------------------------------------------------
# evaluation: features, Fréchet distance, precision/recall, memorisation
# ---------------------------------------------------------------------------


def penultimate_features(model, x: np.ndarray, *, layer: str | None = None, batch_size: int = 512) -> np.ndarray:
    """Features of images ``x`` from a classifier's penultimate layer (float64, (N, D)).

    ``layer`` defaults to the last ``GlobalAveragePooling2D`` layer (the input of
    the dropout and ``logits`` layers of :func:`utils.classify.medmnist_cnn`).
    """
    if layer is None:
        pools = [l.name for l in model.layers if isinstance(l, keras.layers.GlobalAveragePooling2D)]
        if not pools:
            raise ValueError("the model has no GlobalAveragePooling2D layer; pass layer='<name>' explicitly")
        layer = pools[-1]
    extractor = keras.Model(model.inputs, model.get_layer(layer).output)
    return np.asarray(extractor.predict(np.asarray(x, "float32"), batch_size=batch_size, verbose=0), "float64")


class FrechetWarning(RuntimeWarning):
    """The matrix square root of a Fréchet distance had a large imaginary part (the value is unreliable)."""


def sqrtm_real(matrix: np.ndarray, *, imag_tol: float = 1e-3) -> np.ndarray:
    """Principal square root of ``matrix`` (``scipy.linalg.sqrtm``) as a real array.

    The product of two covariance matrices has real, non-negative eigenvalues, so its square root
    is real in exact arithmetic; round-off leaves small imaginary parts, which are dropped.  An
    imaginary part larger than ``imag_tol`` times the largest real entry is not round-off (a
    nearly singular or badly conditioned product, too few samples for the number of features):
    it is still dropped, but with a :class:`FrechetWarning`, so that an unreliable value is not
    reported silently.
    """
    from scipy import linalg

    return _checked_real(linalg.sqrtm(np.asarray(matrix, "float64")), imag_tol)


def _checked_real(root: np.ndarray, imag_tol: float) -> np.ndarray:
    """The real part of a matrix square root, with a :class:`FrechetWarning` if its imaginary part is large."""
    if np.iscomplexobj(root):
        imag = float(np.max(np.abs(root.imag))) if root.size else 0.0
        scale = float(np.max(np.abs(root.real))) if root.size else 0.0
        if imag > imag_tol * max(scale, 1e-12):
            warnings.warn(
                f"the matrix square root has an imaginary part of up to {imag:.3g} (largest real entry "
                f"{scale:.3g}); it is dropped, but the Fréchet distance is unreliable: use more samples "
                f"or fewer features",
                FrechetWarning,
                stacklevel=4,
            )
        root = root.real
    return root


def _covmean_trace(cov_a: np.ndarray, cov_b: np.ndarray, imag_tol: float) -> float:
    """tr((Σa Σb)^{1/2}), regularising a singular product with 1e-6·I on both covariances."""
    from scipy import linalg

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
    singular = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught)
    if singular or not np.all(np.isfinite(root)):  # singular product (e.g. dead ReLU features)
        eps = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(np.trace(_checked_real(root, imag_tol)))


def _fd_from_moments(mu_a, cov_a, mu_b, cov_b, imag_tol: float) -> float:
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * _covmean_trace(cov_a, cov_b, imag_tol))
    return max(fd, 0.0)


def _moments(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, *, imag_tol: float = 1e-3) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows = samples).

    FD = ||μa − μb||² + tr(Σa + Σb − 2 (Σa Σb)^{1/2})  (Dowson & Landau, 1982; the FID
    of Heusel et al., 2017, uses Inception-v3 features), with covariances from ``np.cov``
    (divisor n − 1).  The matrix square root comes from ``scipy.linalg.sqrtm`` through
    :func:`sqrtm_real`: tiny imaginary parts (round-off) are dropped, a large one (relative to
    ``imag_tol``) raises a :class:`FrechetWarning`; a singular product is regularised by adding
    1e-6·I to both covariances.  The value depends on the feature extractor and is biased upwards
    for small samples: compare numbers only under the same extractor and the same sample sizes.
    """
    a, b = np.asarray(feats_a, "float64"), np.asarray(feats_b, "float64")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be 2-D with the same number of columns, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each feature set needs at least 2 rows to estimate a covariance")
    return _fd_from_moments(*_moments(a), *_moments(b), imag_tol)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and ``b`` (float64, clipped at 0)."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def knn_radii(feats: np.ndarray, k: int = 3) -> np.ndarray:
    """Distance from each row to its ``k``-th nearest *other* row (the radius of its k-NN ball)."""
    f = np.asarray(feats, "float64")
    if not 1 <= k < len(f):
        raise ValueError(f"k must be between 1 and len(feats) - 1 = {len(f) - 1}, got {k}")
    d = _pairwise(f, f)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of a generated distribution (Kynkäänniemi et al., 2019).

    The real manifold is the union of balls around each real feature vector with
    radius = distance to its ``k``-th nearest real neighbour; **precision** is the
    fraction of generated samples inside it (are the fakes realistic?).  **Recall**
    swaps the roles: the fraction of real samples inside the generated manifold
    (is the real variety covered?).  Both in [0, 1].
    """
    real, fake = np.asarray(real, "float64"), np.asarray(fake, "float64")
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake must be 2-D with the same number of columns, got {real.shape}, {fake.shape}")
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    d = _pairwise(fake, real)  # (n_fake, n_real)
    precision = float(np.mean((d <= r_real[None, :]).any(axis=1)))
    recall = float(np.mean((d.T <= r_fake[None, :]).any(axis=1)))
    return precision, recall


def nearest_distances(query: np.ndarray, reference: np.ndarray, *, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each query row (image or feature vector), the Euclidean distance to its nearest reference row and its index.

    Images are flattened.  Used for the memorisation check: distances of
    generated images to their nearest *training* image, against the same
    distances of real held-out images.
    """
    q = np.asarray(query, "float64").reshape(len(query), -1)
    r = np.asarray(reference, "float64").reshape(len(reference), -1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query and reference have different sizes per item: {q.shape[1]} vs {r.shape[1]}")
    dist, idx = np.empty(len(q)), np.empty(len(q), dtype=int)
    for s in range(0, len(q), batch):
        d = _pairwise(q[s : s + batch], r)
        idx[s : s + batch] = d.argmin(1)
        dist[s : s + batch] = d[np.arange(len(d)), idx[s : s + batch]]
    return dist, idx


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance between all pairs of distinct rows (a simple diversity score)."""
    f = np.asarray(x, "float64").reshape(len(x), -1)
    if len(f) < 2:
        raise ValueError("need at least 2 samples")
    d = _pairwise(f, f)
    return float(d.sum() / (len(f) * (len(f) - 1)))


def gaussian_baseline(x_train: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` images of independent Gaussian pixels with the training set's per-pixel mean and variance, clipped to [0, 1]."""
    x = np.asarray(x_train, "float64")
    rng = np.random.default_rng(seed)
    out = rng.normal(x.mean(0), x.std(0), size=(int(n), *x.shape[1:]))
    return np.clip(out, 0.0, 1.0).astype("float32")


# ---------------------------------------------------------------------------
# repeated, class-matched comparisons (FD and precision/recall with intervals)
# ---------------------------------------------------------------------------

FLOOR = "real (other half)"


def stratified_halves(labels, n_draws: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_draws`` random splits of a labelled set into two halves with the same class counts.

    Returns index arrays ``(a, b)`` of shape ``(n_draws, n_a)`` and ``(n_draws, n_b)``: in each
    draw every class is shuffled and cut in two (an odd class count gives its extra image to
    ``b``), so ``a`` and ``b`` are disjoint, cover the set, and have the same class mix.
    """
    y = np.asarray(labels).reshape(-1)
    if int(n_draws) < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws!r}")
    classes = np.unique(y)
    if any((y == c).sum() < 4 for c in classes):
        raise ValueError("each class needs at least 4 examples to be split into halves of 2 or more")
    rng = np.random.default_rng(seed)
    a, b = [], []
    for _ in range(int(n_draws)):
        parts = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
        a.append(np.concatenate([p[: len(p) // 2] for p in parts]))
        b.append(np.concatenate([p[len(p) // 2 :] for p in parts]))
    return np.array(a), np.array(b)


def matched_subset(pool_labels, target_labels, rng: np.random.Generator) -> np.ndarray:
    """Indices into a pool, drawn without replacement, with the class counts of ``target_labels``.

    ``pool_labels=None`` (an unconditional pool, e.g. pixel noise) is not allowed here; draw
    ``rng.choice(len(pool), n, replace=False)`` for that case.
    """
    pool = np.asarray(pool_labels).reshape(-1)
    target = np.asarray(target_labels).reshape(-1)
    out = []
    for c in np.unique(target):
        have, need = np.flatnonzero(pool == c), int((target == c).sum())
        if len(have) < need:
            raise ValueError(f"the pool has {len(have)} examples of class {c}, {need} are needed")
        out.append(rng.choice(have, need, replace=False))
    return np.concatenate(out)


class RepeatedComparison:
    """FD, precision and recall of several image sets against random halves of a real set.

    Built by :func:`repeated_comparison`.  ``fd[name]``, ``precision[name]``, ``recall[name]`` hold
    one value per draw; :data:`FLOOR` is the other real half, the value a perfect generator
    would reach at this sample size.  :meth:`interval` gives the median and the 2.5th and
    97.5th percentiles over the draws, :meth:`difference` the same for the per-draw (paired)
    difference between two sets, which were compared with the same real half in every draw.
    """

    def __init__(self, fd, precision, recall, n_a: int, n_b: int, n_draws: int):
        self.fd, self.precision, self.recall = fd, precision, recall
        self.n_a, self.n_b, self.n_draws = n_a, n_b, n_draws

    def values(self, metric: str, name: str) -> np.ndarray:
        """The per-draw values of ``metric`` (``"fd"``, ``"precision"`` or ``"recall"``) for set ``name``."""
        if metric not in ("fd", "precision", "recall"):
            raise ValueError(f"metric must be 'fd', 'precision' or 'recall', got {metric!r}")
        return getattr(self, metric)[name]

    @staticmethod
    def _summary(v: np.ndarray) -> tuple[float, float, float]:
        lo, med, hi = np.percentile(v, [2.5, 50, 97.5])
        return float(med), float(lo), float(hi)

    def interval(self, metric: str, name: str) -> tuple[float, float, float]:
        """(median, 2.5th percentile, 97.5th percentile) of ``metric`` for ``name`` over the draws."""
        return self._summary(self.values(metric, name))

    def difference(self, metric: str, name: str, reference: str = FLOOR) -> tuple[float, float, float]:
        """The same for the per-draw difference ``name − reference`` (paired: same real half per draw)."""
        return self._summary(self.values(metric, name) - self.values(metric, reference))


def _knn_radii_cdist(f: np.ndarray, k: int) -> np.ndarray:
    """:func:`knn_radii` with ``scipy.spatial.distance.cdist`` (the same values; faster for a few hundred rows)."""
    from scipy.spatial.distance import cdist

    d = cdist(f, f)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def repeated_comparison(
    real_feats, real_labels, candidates: dict, *, n_draws: int = 20, seed: int = 0, k: int = 3
) -> RepeatedComparison:
    """Compare each candidate set with random class-matched halves of a real set, ``n_draws`` times.

    In every draw the real set (``real_feats``, rows = images, with ``real_labels``) is split by
    :func:`stratified_halves` into halves A and B.  The floor (:data:`FLOOR`) compares A with B.
    Each candidate ``name: (feats, labels)`` contributes a subset with A's class counts
    (:func:`matched_subset`; ``labels=None`` for an unconditional set: a random subset of A's
    size) and is compared with the same B.  Every comparison thus has the same sample sizes and
    the same class mix on both sides, and the floor comes from images the caller keeps away from
    the feature extractor's training.  Features are computed once by the caller; only indices
    change between draws.  The halves depend only on ``seed`` and each candidate's subsets only on
    ``seed`` and its name, so two calls with the same seed share the halves and the per-draw values
    of a candidate, and differences between calls are paired.
    """
    from scipy.spatial.distance import cdist

    real = np.asarray(real_feats, "float64")
    y = np.asarray(real_labels).reshape(-1)
    if len(real) != len(y):
        raise ValueError(f"real_feats has {len(real)} rows but real_labels has {len(y)}")
    if FLOOR in candidates:
        raise ValueError(f"{FLOOR!r} is the name of the floor; give the candidate another name")
    idx_a, idx_b = stratified_halves(y, n_draws, seed=seed)
    # one random stream per candidate, named by the candidate: its subsets (and so its values) do not
    # depend on which other candidates are compared in the same call
    rngs = {name: np.random.default_rng([int(seed), zlib.crc32(name.encode())]) for name in candidates}
    names = [FLOOR, *candidates]
    out = {m: {n: np.empty(len(idx_a)) for n in names} for m in ("fd", "precision", "recall")}
    for r, (ia, ib) in enumerate(zip(idx_a, idx_b)):
        fb = real[ib]
        mom_b = _moments(fb)
        radii_b = _knn_radii_cdist(fb, k)
        sets = {FLOOR: real[ia]}
        for name, (feats, labels) in candidates.items():
            feats = np.asarray(feats, "float64")
            rng = rngs[name]
            pick = (
                rng.choice(len(feats), len(ia), replace=False) if labels is None else matched_subset(labels, y[ia], rng)
            )
            sets[name] = feats[pick]
        for name, fa in sets.items():
            out["fd"][name][r] = _fd_from_moments(*_moments(fa), *mom_b, 1e-3)
            d = cdist(fa, fb)  # (n_a, n_b); for these small sets faster than _pairwise's matrix product
            out["precision"][name][r] = float(np.mean((d <= radii_b[None, :]).any(axis=1)))
            out["recall"][name][r] = float(np.mean((d.T <= _knn_radii_cdist(fa, k)[None, :]).any(axis=1)))
    return RepeatedComparison(out["fd"], out["precision"], out["recall"], idx_a.shape[1], idx_b.shape[1], len(idx_a))
