"""Photo views for distillation: a post's copy keeps its text and sees its pictures through a seeded crop, the
same part of the photo at any size, and the teacher's logits are keyed by the view."""

import numpy as np

from pipeline.data.photo_views import photo_view_copy, seeded_view
from pipeline.data.records import Record
from pipeline.training.teacher import Teacher


def post(**kw) -> Record:
    fields = dict(id="p1", text="the screen came cracked", attachments=["a.jpg"], labels={"s": "neg"}, source="x")
    return Record(**{**fields, **kw})


def gradient(size: int) -> np.ndarray:
    """A photo whose every pixel says where it is: red grows to the right, green downwards."""
    ramp = np.linspace(0, 255, size)
    red, green = np.meshgrid(ramp, ramp)
    return np.stack([red, green, np.full_like(red, 128)]).round().astype(np.uint8)


def test_a_photo_view_copy_keeps_the_text_and_drops_the_labels():
    copy = photo_view_copy(post(), copy=2, seed=5)
    assert (copy.id, copy.text, copy.attachments, copy.labels) == ("p1~photo2", post().text, ["a.jpg"], {})
    assert copy.photo_view == "5:2:p1" and "photo view 2" in copy.source
    assert post().photo_view is None


def test_a_view_is_seeded_keeps_the_shape_and_sees_one_part_of_the_photo_at_any_size():
    photo = gradient(224)
    views = [seeded_view(photo, f"0:{k}:p1") for k in range(1, 9)]
    assert all(v.shape == photo.shape and v.dtype == np.uint8 for v in views)
    assert np.array_equal(views[0], seeded_view(photo, "0:1:p1"))
    assert all(not np.array_equal(v, photo) for v in views)
    mirrored = [v for v in views if v[0, 0, 0] > v[0, 0, -1]]  # red falls to the right
    assert 0 < len(mirrored) < len(views)
    for view in views:  # a crop: the view spans less of the photo than the photo does
        assert np.ptp(view[0].astype(int)) < 255 * 0.96 and np.ptp(view[1].astype(int)) < 255 * 0.96
    small = seeded_view(gradient(112), "0:1:p1")  # a student at another size sees the same part
    assert np.abs(small.astype(int) - views[0][:, ::2, ::2].astype(int)).max() <= 4
    clip = np.stack([photo, photo])
    assert all(np.array_equal(frame, views[0]) for frame in seeded_view(clip, "0:1:p1"))


def test_the_teachers_logits_are_keyed_by_the_view(trained_run):
    teacher = Teacher(trained_run)
    plain = teacher.cache_key([post()])
    assert teacher.cache_key([photo_view_copy(post(), 1, seed=0)]) != teacher.cache_key(
        [photo_view_copy(post(), 1, seed=1)]
    )
    assert teacher.cache_key([post()]) == plain
