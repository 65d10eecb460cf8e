"""``meshtalk animate``: speech to a talking face, from a WAV of any length to ``animation.npz``, OBJ frames and an
MP4, in bounded memory and faster than real time (docs/animation.md has the figures).

The package has one door, ``animate_file`` (``meshtalk.animate.run``), and these rooms behind it:
- ``speech``: the WAV prepared as ingest prepares a sentence (``read_speech``); the store's utterance log-mel
  computed block by block from the audio, with the same values (``log_mel_frames``); the audio encoder run over
  each block of mel frames once (``audio_codes``, ``speech_codes``): the one-second windows of neighbouring mesh
  frames overlap by 97 %, so evaluating the encoder's valid convolutions on the whole block and averaging each
  frame's positions is the same computation as encoding every window on its own, without computing each mel frame
  thirty times;
- ``labels``: the context model only sees the last ``receptive_field`` (20) frames, so the sequence is sampled in
  pieces (``LabelPlan``, ``iter_labels``). ``segment_frames=None`` samples one chain, piece after piece, each
  started from the last 20 labels of the previous one (``sample_fast(prefix=...)``): exactly the labels of
  sampling the whole sequence at once. With ``segment_frames=L`` the sequence is cut into segments of L frames
  that are sampled side by side as one batch, each warmed up on the 20 frames before it. The sampler's cost per
  step is mostly reading the context model's 71 MB of weights, about the same for one sequence as for 30, so this
  is several times faster on long audio; the price is that the chain restarts at each segment boundary, which the
  geometry crossfades over;
- ``stream``: the decoder on a bounded number of frames at a time with its LSTM state carried over
  (``DecoderStream``), the smoothing as a delay line of ``4 * len(masks)`` frames (``StreamSmoother``), and the
  whole stream of smoothed frames (``animate_speech``);
- ``face``: the template and the smoothing masks, from mesh files or a store;
- ``run``: ``animate_file``, which writes the frames as they come (``meshtalk.animation_file.AnimationWriter``),
  then OBJ frames and the video (``meshtalk.render.write_animation_video``).

Below it, and re-exported here: the inference core on whole tensors (``meshtalk.inference``: ``animate``,
``smooth_regions``, the reference's post-processing) and the animation file (``meshtalk.animation_file``:
``read_animation``, ``write_animation``, ``VideoOptions``). Inference uses the audio encoder, the context model and
the decoder; the expression encoder and fusion MLP are not needed.
"""

from meshtalk.animate.face import Face, check_vertex_count, read_face, read_smoothing_masks
from meshtalk.animate.labels import LabelPiece, LabelPlan, iter_labels, segment_bounds, segment_seed
from meshtalk.animate.run import COMPUTE_STAGES, AnimateResult, animate_file, peak_rss_mb, write_obj_frames
from meshtalk.animate.speech import Speech, audio_codes, compile_resampler, log_mel_frames, read_speech, speech_codes
from meshtalk.animate.stream import DecoderStream, StageTimes, StreamSmoother, animate_speech
from meshtalk.animation_file import (
    DEFAULT_VIDEO,
    AnimationFile,
    AnimationWriter,
    FileFrames,
    VideoOptions,
    read_animation,
    write_animation,
)
from meshtalk.inference import Animation, animate, gaussian_kernel, smooth_in_time, smooth_regions

__all__ = [
    "COMPUTE_STAGES", "DEFAULT_VIDEO", "AnimateResult", "Animation", "AnimationFile", "AnimationWriter",
    "DecoderStream", "Face", "FileFrames", "LabelPiece", "LabelPlan", "Speech", "StageTimes", "StreamSmoother",
    "VideoOptions", "animate", "animate_file", "animate_speech", "audio_codes", "check_vertex_count",
    "compile_resampler", "gaussian_kernel", "iter_labels", "log_mel_frames", "peak_rss_mb", "read_animation",
    "read_face", "read_smoothing_masks", "read_speech", "segment_bounds", "segment_seed", "smooth_in_time",
    "smooth_regions", "speech_codes", "write_animation", "write_obj_frames",
]
